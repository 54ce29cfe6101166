"""The shipped demo LALM: loads offline, answers above chance on unseen speakers, and its decoder MLPs carry
the decision as a whole (zeroing them all takes accuracy to chance; random 2 % of units do nothing).

NOT yet achieved (see docs/demo_model.md): per-emotion ConAct/MAD neurons at a small budget with a clear
self effect -- the current model spreads the decision over many units, so no test asserts it."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from esn_lens.demo_model import (ASSETS, DEMO_EMOTIONS, deactivation_effects, demo_clips,
                                 load_demo_model, predict, per_class_accuracy)

#: per-class accuracy measured on the shipped unseen-speaker clips (esn_lens/assets/demo/metrics.json)
MEASURED_UNSEEN = {"angry": 0.725, "happy": 0.65, "neutral": 0.675, "sad": 0.9}
TOP_FRAC = 0.02


@pytest.fixture(scope="module")
def lens():
    from esn_lens.lens import Lens

    torch.set_num_threads(1)
    model, proc = load_demo_model()
    return Lens(model, proc)


@pytest.fixture(scope="module")
def unseen(lens):
    clips = demo_clips("unseen")
    return clips, [c.load(16000)[0] for c in clips]


def test_assets_small_and_offline(monkeypatch):
    total = sum(p.stat().st_size for p in ASSETS.rglob("*") if p.is_file())
    assert total < 20e6
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, proc = load_demo_model()
    assert type(model).__name__ == "Qwen2AudioForConditionalGeneration"
    for e in DEMO_EMOTIONS:  # emotion words are single tokens
        assert len(proc.tokenizer(e, add_special_tokens=False)["input_ids"]) == 1


def test_adapter_and_splits(lens):
    assert lens.adapter.name == "qwen2_audio"
    ident, uns = demo_clips("identification"), demo_clips("unseen")
    assert not {c.speaker for c in ident} & {c.speaker for c in uns}  # unseen speakers really are unseen
    for clips in (ident, uns):
        counts = {e: sum(c.emotion == e for c in clips) for e in DEMO_EMOTIONS}
        assert min(counts.values()) >= 30


def test_unseen_accuracy_above_chance(lens, unseen):
    clips, audio = unseen
    acc = per_class_accuracy(predict(lens, clips)["base"], clips)
    for e, measured in MEASURED_UNSEEN.items():
        assert acc[e] == pytest.approx(measured, abs=0.02), (e, acc)  # deterministic up to float noise
        assert acc[e] > 0.25 + 0.1
    assert np.mean(list(acc.values())) > 0.5


def test_mlps_carry_the_decision_random_units_do_not(lens, unseen):
    from esn_lens.selectors import find_neurons

    clips, audio = unseen
    stats = lens.new_stats(DEMO_EMOTIONS)  # random units need only the shape
    from esn_lens.neurons import NeuronSet

    all_units = NeuronSet(torch.ones(len(DEMO_EMOTIONS), lens.n_layers, lens.d_mlp, dtype=torch.bool), DEMO_EMOTIONS,
                          selector="all", top_frac=1.0, site="act", model_fingerprint=lens.fingerprint)
    sets = {"random": find_neurons(stats, "random", top_frac=TOP_FRAC), "all": all_units}
    res = deactivation_effects(lens, clips, sets)  # the audio encoder runs once per batch
    off = [res["base"][e] + res["all"]["delta"][0][i] / 100 for i, e in enumerate(DEMO_EMOTIONS)]
    assert np.mean(off) < 0.35  # measured 0.225 (chance 0.25)
    assert abs(res["random"]["SE"]) < 3 and abs(res["random"]["ACE"]) < 3


def test_training_script_smoke(tmp_path):
    script = Path(__file__).resolve().parents[1] / "scripts" / "train_demo_model.py"
    if not script.is_file():
        pytest.skip("training script not in this checkout")
    pytest.importorskip("espeakng_loader")
    r = subprocess.run([sys.executable, str(script), "--smoke", "--out", str(tmp_path)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "model" / "config.json").is_file()
    assert "max |diff|" in r.stdout
