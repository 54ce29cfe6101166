"""Small API fixes of issue #15 (item 7): string-content chat templates, SEREvaluator(text_template=...),
``esn-lens demo --device/--dtype`` (and --dtype with --model demo), ``--intervention NAME``."""
from __future__ import annotations

import json
import textwrap

import pytest
import torch

from esn_lens.cli import build_parser, config_from_args, main
from esn_lens.errors import InputError
from esn_lens.evaluate import SEREvaluator
from esn_lens.lens import Lens
from esn_lens.testing import build_tiny
from esn_lens.testing.planted import build_planted, planted_clips
from pipeline_assets import planted_model_dir, write_text_corpus

EMOTIONS = ("angry", "happy", "neutral", "sad")
STRING_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] + '\\n' }}{% endfor %}"
                   "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def run_main(argv) -> int:
    try:
        return main(argv)
    except SystemExit as e:
        return int(e.code)


# ---------------------------------------------------------------------- string-content chat templates
def test_string_only_chat_template_gets_string_content():
    model, tok = build_tiny("llama")  # a fresh tokenizer: the template is changed below
    tok.chat_template = STRING_TEMPLATE
    with pytest.raises(TypeError):  # what the list-of-parts conversation does to such a template
        tok.apply_chat_template([{"role": "user", "content": [{"type": "text", "text": "hi"}]}], tokenize=False)
    lens = Lens(model, tok)
    assert lens.adapter.render_prompt("Which emotion?", with_audio=False) == "<|user|>Which emotion?\n<|assistant|>"
    assert (lens.adapter.render_prompt("Q", with_audio=False, system="Be brief.")
            == "<|system|>Be brief.\n<|user|>Q\n<|assistant|>")
    b = lens.batch(None, ["Which emotion?", "Is it sad?"])
    ids = b.inputs["input_ids"]
    assert ids.shape[0] == 2
    assert tok.decode(ids[1][b.inputs["attention_mask"][1].bool()]) == "<|user|>Is it sad?\n<|assistant|>"
    with torch.no_grad():
        logits = model(**b.inputs).logits
    assert logits.shape[:2] == ids.shape and bool(torch.isfinite(logits).all())


def test_list_of_parts_templates_are_unchanged(tiny):
    model, tok = tiny("qwen2")
    lens = Lens(model, tok)
    text = lens.adapter.render_prompt("Which emotion?", with_audio=False)
    assert text == tok.apply_chat_template(lens.adapter.conversation("Which emotion?", False),
                                           add_generation_prompt=True, tokenize=False)


# ---------------------------------------------------------------------- SEREvaluator(text_template=...)
def test_ser_evaluator_text_template():
    model, tok, _ = build_planted(EMOTIONS)
    lens = Lens(model, tok)
    clips = planted_clips(3, EMOTIONS, seed=0)
    default = SEREvaluator(lens, EMOTIONS, answer="word").run(clips)["baseline"]
    same = SEREvaluator(lens, EMOTIONS, answer="word", text_template="Transcript: {text}\n{prompt}").run(clips)["baseline"]
    assert default.accuracy == same.accuracy == 1.0 and default.predictions == same.predictions
    blind = SEREvaluator(lens, EMOTIONS, answer="word", text_template="{prompt}").run(clips)["baseline"]
    assert blind.accuracy <= 0.5  # without the transcript the cue word is gone
    assert SEREvaluator(lens, EMOTIONS, text_template="{text} {prompt}").text_template == "{text} {prompt}"
    with pytest.raises(InputError, match=r"text_template must be a format string with \{text\} and \{prompt\}, "
                                         r"got '\{transcript\} \{prompt\}'"):
        SEREvaluator(lens, EMOTIONS, text_template="{transcript} {prompt}")
    with pytest.raises(InputError, match=r"text_template must contain \{prompt\}"):
        SEREvaluator(lens, EMOTIONS, text_template="{text}")


# ---------------------------------------------------------------------- demo --device / --dtype
def test_demo_takes_device_and_dtype():
    args = build_parser().parse_args(["demo", "--quick", "--device", "cpu", "--dtype", "bfloat16"])
    cfg = config_from_args(args)
    assert cfg.device == "cpu" and cfg.dtype == "bfloat16" and cfg.model == "demo"


def test_unknown_dtype_refused_before_loading(tmp_path, capsys):
    assert run_main(["demo", "--quick", "--dtype", "fp8", "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown dtype 'fp8'; expected one of" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "d").exists()


def test_dtype_honoured_with_demo_model():
    from esn_lens.demo_model import demo_model_dir
    from esn_lens.pipeline import RunConfig, load_lens

    if not (demo_model_dir() / "config.json").is_file():
        pytest.skip("the demo model's assets are not shipped")
    lens = load_lens(RunConfig(model="demo", dtype="bfloat16", device="cpu", progress=False))
    assert {p.dtype for p in lens.model.parameters()} == {torch.bfloat16}


# ---------------------------------------------------------------------- --intervention NAME
PLUGIN = textwrap.dedent('''
    from esn_lens.interventions import INTERVENTIONS, Gain

    @INTERVENTIONS.register("halve_for_test")
    def halve(units, site="act", rows=None, positions=None):
        return Gain(units, site=site, rows=rows, positions=positions, gain=0.5)
''')


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("api_fixes")
    (root / "esn_test_plugin_halve.py").write_text(PLUGIN)
    return {"root": root, "model": planted_model_dir(root), "corpus": write_text_corpus(root / "corpus", 6)}


def args(a, out, *extra):
    return ["run", "--model", str(a["model"]), "--dataset", "manifest", "--data-dir", str(a["corpus"]),
            "--mode", "constrained", "--answer", "word", "--top-frac", "0.03125", "--selector", "conact",
            "--alpha", "2", "--bootstrap", "0", "--batch-size", "8", "--threads", "1", "--no-progress",
            "--out", str(out), *extra]


def test_intervention_by_name_from_a_plugin(assets, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(assets["root"]))
    base, halved = assets["root"] / "deact", assets["root"] / "halved"
    assert main(args(assets, base)) == 0
    assert main(args(assets, halved, "--plugin", "esn_test_plugin_halve", "--intervention", "halve_for_test")) == 0
    rb = json.loads((base / "results.json").read_text())
    rh = json.loads((halved / "results.json").read_text())
    assert "intervention" not in rb["config"] and rh["config"]["intervention"] == "halve_for_test"
    assert rb["selectors"]["conact"]["deactivation"]["ess_mean"] == -1.0  # zeroing the planted units: every answer lost
    assert rh["selectors"]["conact"]["deactivation"]["ess_mean"] > -1.0  # halving them is a weaker edit
    assert json.loads((halved / "config.json").read_text())["intervention"] == "halve_for_test"


def test_unknown_intervention_refused_before_loading(assets, tmp_path, capsys):
    assert run_main(args(assets, tmp_path / "r", "--intervention", "nope")) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown intervention 'nope'; registered: deactivate, steer, mean_ablate, add" in err
    assert not (tmp_path / "r").exists()
