"""``esn-lens run --model <saved tiny Qwen3-Omni folder>`` with every selector: the pipeline on expert units."""
from __future__ import annotations

import json

from esn_lens.cli import main
from esn_lens.selectors import SELECTORS
from esn_lens.stats import NeuronStats

from pipeline_assets import EMOTIONS, write_tone_corpus


def test_run_on_a_saved_qwen3_omni_thinker_with_every_selector(tmp_path, capsys):
    from esn_lens.testing import build_tiny

    model, proc = build_tiny("qwen3_omni_moe_thinker", seed=3)
    folder = tmp_path / "qwen3_omni"
    model.save_pretrained(folder)
    proc.save_pretrained(folder)
    corpus = write_tone_corpus(tmp_path / "tones", speakers=2, per_speaker=3)
    out = tmp_path / "run"
    selectors = [a for s in SELECTORS.names() for a in ("--selector", s)]
    rc = main(["run", "--model", str(folder), "--dataset", "manifest", "--data-dir", str(corpus), "--mode",
               "constrained", "--top-frac", "0.05", *selectors, "--alpha", "2", "--bootstrap", "0", "--eval-per-emotion", "1",
               "--batch-size", "8", "--threads", "1", "--no-progress", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    r = json.loads((out / "results.json").read_text())
    assert r["model"]["adapter"] == "qwen3_omni_moe"
    assert set(r["selectors"]) == set(SELECTORS.names())
    for name, s in r["selectors"].items():
        assert set(s["counts"]) == set(EMOTIONS) and "deactivation" in s, name
    stats = [NeuronStats.load(p) for p in out.rglob("*.safetensors") if "stats" in p.name]
    assert stats and all(s.routed and s.T.shape == (4, 2, 64) for s in stats)
