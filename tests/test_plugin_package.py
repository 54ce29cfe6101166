"""A third-party plugin package built here (issue #28), through public names only: a selector with an option, an
intervention with an option that asks for the run's stats, a non-gated-MLP adapter (a tiny GPT-2: c_fc -> act ->
c_proj), a dataset, a run stage and a report section showing the stage's product. A run through its entry point equals a run with ``--plugin``; a broken
plugin intervention is refused before the model loads, in one line naming the plugin."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from esn_lens.demo_model import ASSETS

PLUGIN = '''
"""esnplug: a test plugin package for esn_lens (public names only)."""
import torch
from esn_lens.adapters import Adapter, register_adapter
from esn_lens.data import DATASETS, Record
from esn_lens.interventions import INTERVENTIONS, FunctionEdit
from esn_lens.report import REPORT_SECTIONS, Block
from esn_lens.run import register_stage
from esn_lens.selectors import SELECTORS
from esn_lens.stats import NeuronStats

__version__ = "0.3"
SEEN = {}


@SELECTORS.register("plug_power")
def plug_power(stats, *, seed=0, power=1.0):
    """score = P_e(n) ** power minus the mean over emotions of it."""
    p = stats.firing_rate ** float(power)
    return p - p.mean(0, keepdim=True)


@INTERVENTIONS.register("plug_scale")
def plug_scale(units, stats, factor=0.0, site="act", rows=None, positions=None):
    """Multiply the units by ``factor`` (asks for the run's stats: checks they came)."""
    if not isinstance(stats, NeuronStats):
        raise TypeError(f"expected the run's NeuronStats, got {type(stats).__name__}")
    f = float(factor)
    return FunctionEdit(units, site=site, rows=rows, positions=positions, fn=lambda v, layer, mask: v * f)


@register_adapter("plug_gpt2")
class PlugGPT2(Adapter):
    """GPT-2: plain MLPs (c_fc -> act -> c_proj) at transformer.h."""
    layers_path = "transformer.h"
    class_names = ("GPT2LMHeadModel",)
    mlp_sites = {"pre": ("c_fc", "output"), "act": ("act", "output"), "post": ("c_proj", "input")}
    turn_start = turn_end = None

    def attn_path(self, layer):
        return f"{self.layer_path(layer)}.attn"

    @property
    def embed_path(self):
        return "transformer.wte"


@DATASETS.register("plug_manifest")
def plug_manifest(root):
    """plug_manifest: rows of root/manifest.csv (path,emotion,speaker,utterance_id,text)."""
    import csv
    with open(root / "manifest.csv", newline="") as f:
        for r in csv.DictReader(f):
            yield Record(r["utterance_id"], label=r["emotion"], path=root / r["path"], speaker=r["speaker"], text=r["text"])


@register_stage("plug_pool_size", needs=["pool_ids"], produces=["plug_pool_size"], after="stats")
def plug_pool_size(run):
    """A new product of the run, written to the run folder for the report section."""
    run.plug_pool_size = len(run.pool_ids)
    run.folder.write_json({"pool_size": run.plug_pool_size}, "plug_pool_size.json")


@REPORT_SECTIONS.register("plug_section")
def plug_section(results, run_dir):
    import json
    n = len(results.get("selectors", {}))
    size = json.loads((run_dir / "plug_pool_size.json").read_text())["pool_size"]
    return [Block("h2", "Plugin section"), Block("p", f"esnplug saw {n} selectors and a pool of {size} clips.")]
'''

BROKEN = '''
from esn_lens.interventions import INTERVENTIONS

@INTERVENTIONS.register("plug_broken")
def plug_broken(units, site="act", rows=None, positions=None):
    raise RuntimeError("plug_broken is not implemented")
'''


def _write(root, name, code, dist=None):
    root.mkdir(parents=True, exist_ok=True)
    (root / name).mkdir()
    (root / name / "__init__.py").write_text(code)
    if dist:
        info = root / f"{dist}-0.3.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.3\n")
        (info / "entry_points.txt").write_text(f"[esn_lens.plugins]\n{dist} = {name}\n")
        (info / "top_level.txt").write_text(name + "\n")
    return root


def _cli(args, extra_path, cwd):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(extra_path), os.environ.get("PYTHONPATH", "")]),
               HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "esn_lens.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=600)


RUN = ["run", "--model", "demo", "--dataset", "plug_manifest", "--data-dir", str(ASSETS / "clips" / "unseen"),
       "--selector", "plug_power", "--selector", "random", "--selector-option", "plug_power.power=2",
       "--intervention", "plug_scale", "--intervention-option", "plug_scale.factor=0.5",
       "--mode", "constrained", "--answer", "word", "--top-frac", "0.02", "--ident-per-emotion", "4",
       "--eval-per-emotion", "3", "--alpha", "1", "--bootstrap", "0", "--no-progress", "--batch-size", "16"]


def test_entry_point_run_equals_plugin_run(tmp_path):
    ep = _write(tmp_path / "ep", "esnplug", PLUGIN, dist="esnplug")
    plain = _write(tmp_path / "plain", "esnplug", PLUGIN)
    a = _cli([*RUN, "--out", str(tmp_path / "a")], ep, tmp_path)
    assert a.returncode == 0, a.stderr[-3000:]
    b = _cli([*RUN, "--plugin", "esnplug", "--out", str(tmp_path / "b")], plain, tmp_path)
    assert b.returncode == 0, b.stderr[-3000:]
    ra, rb = (json.loads((tmp_path / d / "results.json").read_text()) for d in "ab")
    assert ra["selectors"] == rb["selectors"] and ra["baseline"] == rb["baseline"]
    assert set(ra["selectors"]) == {"plug_power", "random"}
    cfg_a, cfg_b = (json.loads((tmp_path / d / "config.json").read_text()) for d in "ab")
    assert cfg_a["selector_options"] == {"plug_power": {"power": 2}}
    assert cfg_a["intervention_options"] == {"plug_scale": {"factor": 0.5}}
    assert [(p["module"], p["distribution"], p["version"]) for p in cfg_a["plugins"]] == [("esnplug", "esnplug", "0.3")]
    assert [(p["module"], p["version"]) for p in cfg_b["plugins"]] == [("esnplug", "0.3")]  # no distribution: __version__
    report = (tmp_path / "a" / "report.md").read_text()
    pool = json.loads((tmp_path / "a" / "plug_pool_size.json").read_text())["pool_size"]
    assert pool == sum(ra["clips"]["pool"].values()) > 0  # the plugin stage's product
    assert "## Plugin section" in report and f"esnplug saw 2 selectors and a pool of {pool} clips." in report
    assert "edited by the intervention `plug_scale` (factor=0.5)" in report and "set to 0" not in report
    # the options are part of the run's identity: another power cannot resume this run
    c = _cli([*RUN, "--plugin", "esnplug", "--out", str(tmp_path / "b"), "--resume",
              "--selector-option", "plug_power.power=3"], plain, tmp_path)
    assert c.returncode == 2 and "selector_options" in c.stderr


def test_broken_plugin_refused_before_model_loads(tmp_path):
    root = _write(tmp_path / "site", "brokenplug", BROKEN)
    _write(tmp_path / "site2", "esnplug", PLUGIN)
    args = ["run", "--model", str(tmp_path / "no_such_model_would_fail_later"), "--dataset", "demo",
            "--plugin", "brokenplug", "--intervention", "plug_broken", "--out", str(tmp_path / "r")]
    p = _cli(args, root, tmp_path)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert ("intervention 'plug_broken' (plugin module 'brokenplug') fails on dummy units with options {}: "
            "RuntimeError: plug_broken is not implemented") in p.stderr
    assert not (tmp_path / "r").exists()
    # a module raising anything while importing, and a clash of names: one line each, naming the plugin(s)
    (root / "raiser.py").write_text("raise ValueError('bad config value')\n")
    p = _cli(["models", "--plugin", "raiser"], root, tmp_path)
    assert p.returncode == 2 and p.stderr.strip() == ("esn-lens models: error: cannot import plugin 'raiser': "
                                                      "ValueError: bad config value")
    (root / "clash.py").write_text("from esn_lens.selectors import SELECTORS\nSELECTORS.register('conact', lambda s, **k: s.K)\n")
    p = _cli(["datasets", "--plugin", "clash"], root, tmp_path)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1
    assert "selector 'conact' of module 'clash' clashes with the selector 'conact' already registered by module " \
           "'esn_lens.selectors'" in p.stderr
    # a bad option value is refused before the model loads too, naming the selector and its origin
    p = _cli(["run", "--model", "demo", "--dataset", "demo", "--plugin", "esnplug", "--selector", "plug_power",
              "--selector-option", "plug_power.power=\"x\"", "--out", str(tmp_path / "r2")], tmp_path / "site2", tmp_path)
    assert p.returncode == 2 and "selector 'plug_power' (plugin module 'esnplug') fails on tiny statistics" in p.stderr
    p = _cli(["run", "--model", "demo", "--dataset", "demo", "--selector-option", "lape.nope=1", "--selector", "lape",
              "--out", str(tmp_path / "r3")], tmp_path / "site2", tmp_path)
    assert p.returncode == 2 and "selector 'lape' (esn_lens)" in p.stderr and "nope" in p.stderr


@pytest.fixture
def plug(tmp_path, monkeypatch):
    from esn_lens.adapters import ADAPTERS
    from esn_lens.data import DATASETS
    from esn_lens.interventions import INTERVENTIONS
    from esn_lens.plugins import load_plugin
    from esn_lens.report import REPORT_SECTIONS
    from esn_lens.run import STAGE_REGISTRY
    from esn_lens.selectors import SELECTORS

    _write(tmp_path / "site", "esnplug", PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    mod = load_plugin("esnplug")
    yield mod
    for reg, name in ((SELECTORS, "plug_power"), (INTERVENTIONS, "plug_scale"), (ADAPTERS, "plug_gpt2"),
                      (DATASETS, "plug_manifest"), (REPORT_SECTIONS, "plug_section")):
        reg.unregister(name)
    from esn_lens.run import unregister_stage

    unregister_stage("plug_pool_size")
    assert "plug_pool_size" not in STAGE_REGISTRY
    sys.modules.pop("esnplug", None)


def tiny_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    from esn_lens.testing.tiny import build_tokenizer

    torch.manual_seed(0)
    tok = build_tokenizer(["angry", "happy", "neutral", "sad"])
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
    model = GPT2LMHeadModel(GPT2Config(vocab_size=320, n_positions=256, n_embd=32, n_layer=2, n_head=2, n_inner=48,
                                       attn_implementation="eager")).eval()
    return model, tok


def test_plain_mlp_adapter_exact_against_hooks(plug):
    """The plugin's GPT-2 adapter: hook_pre/act/post, statistics (K and T) and an edit equal plain torch hooks."""
    from esn_lens import Lens, find_neurons
    from esn_lens.interventions import make_edit
    from esn_lens.testing.planted import planted_clips

    model, tok = tiny_gpt2()
    lens = Lens(model, tok)
    assert lens.adapter.name == "plug_gpt2" and (lens.n_layers, lens.d_mlp) == (2, 48)
    clips = planted_clips(2, seed=0)
    batch = lens.batch_clips(clips, "Which emotion?")
    out = lens.run(batch, record=[f"blocks.{l}.mlp.hook_{s}" for l in range(2) for s in ("pre", "act", "post")])
    ref, hooks = {}, []
    for l, blk in enumerate(model.transformer.h):
        hooks.append(blk.mlp.c_fc.register_forward_hook(lambda m, i, o, l=l: ref.__setitem__((l, "pre"), o.detach())))
        hooks.append(blk.mlp.act.register_forward_hook(lambda m, i, o, l=l: ref.__setitem__((l, "act"), o.detach())))
        hooks.append(blk.mlp.c_proj.register_forward_pre_hook(lambda m, i, l=l: ref.__setitem__((l, "post"), i[0].detach())))
    with torch.no_grad():
        plain_logits = model(**batch.inputs).logits
    for h in hooks:
        h.remove()
    for (l, s), v in ref.items():
        assert torch.equal(out.cache[f"blocks.{l}.mlp.hook_{s}"], v), (l, s)
    # statistics: K and T exactly as counted from the hooked values over the valid positions
    emos = ("angry", "happy", "neutral", "sad")
    stats = lens.collect_stats(clips, "Which emotion?", emos, batch_size=8, progress=False)
    valid = batch.masks.select("valid")
    y = torch.tensor([emos.index(c.emotion) for c in clips])
    for e in range(4):
        rows = valid & (y == e)[:, None]
        assert stats.T[e].item() == rows.sum().item()
        for l in range(2):
            assert torch.equal(stats.K[e, l], ((ref[(l, "act")] > 0) & rows[..., None]).sum((0, 1)).double())
    # the plugin's selector (with its option) and intervention (with the stats it asks for) on the plain MLP
    ns = find_neurons(stats, "plug_power", count=3, power=2)
    edit = make_edit("plug_scale", ns["angry"], stats=stats, factor=0.0)
    edited = lens.run(batch, edits=[edit], logits="all").logits
    mask = ns["angry"]
    hooks = [blk.mlp.act.register_forward_hook(lambda m, i, o, l=l: o.masked_fill(mask[l], 0.0))
             for l, blk in enumerate(model.transformer.h)]
    with torch.no_grad():
        by_hand = model(**batch.inputs).logits
    for h in hooks:
        h.remove()
    assert torch.allclose(edited, by_hand, atol=1e-6) and not torch.allclose(edited, plain_logits)


def test_plugin_dataset_and_report_section(plug, tmp_path):
    from esn_lens.data import load_dataset
    from esn_lens.report import REPORT_SECTIONS

    ds = load_dataset("plug_manifest", ASSETS / "clips" / "unseen")
    assert len(ds) == 144 and {c.emotion for c in ds} == {"angry", "happy", "neutral", "sad"}
    assert "plug_section" in REPORT_SECTIONS
    (tmp_path / "plug_pool_size.json").write_text('{"pool_size": 7}')
    blocks = REPORT_SECTIONS.get("plug_section")({"selectors": {"a": 1}}, tmp_path)
    assert blocks[1].content == "esnplug saw 1 selectors and a pool of 7 clips."
    from esn_lens.run import stage_order

    order = [st.name for st in stage_order()]
    assert order.index("plug_pool_size") == order.index("stats") + 1
