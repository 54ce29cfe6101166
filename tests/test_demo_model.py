"""The shipped demo LALM: loads offline, answers above chance on unseen speakers, its decoder MLPs carry the
decision for every emotion, and the ESN claims measured at the documented budget (2 %) hold on the shipped
clips: ConAct and MAD neurons have a self effect of >= 10 points with cross effects <= a third of it, random
units move nothing, steering ConAct units raises the target's predicted share monotonically.

Weak (see docs/demo_model.md): happy's ConAct self effect is small (-5.6 points on all shipped clips, 0 on this
reduced set), and steering moves the shares by a few points only (happy's and sad's by one clip)."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from esn_lens.demo_model import (ASSETS, DEMO_EMOTIONS, DEMO_TOP_FRAC, deactivation_effects, demo_clips,
                                 identification_stats, load_demo_model, predict, per_class_accuracy, steering_shares)

#: per-class accuracy measured on the shipped unseen-speaker clips (esn_lens/assets/demo/metrics.json)
MEASURED_UNSEEN = {"angry": 0.861, "happy": 0.917, "neutral": 0.917, "sad": 0.917}
TOP_FRAC = DEMO_TOP_FRAC


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
        assert acc[e] > 0.25 + 0.5
    assert np.mean(list(acc.values())) > 0.88  # measured .903 (clips of intensity 0.25-1)


def test_mlps_carry_the_decision_random_units_do_not(lens, unseen):
    from esn_lens.selectors import find_neurons

    clips, audio = unseen
    stats = lens.new_stats(DEMO_EMOTIONS)  # random units need only the shape
    from esn_lens.neurons import NeuronSet

    all_units = NeuronSet(torch.ones(len(DEMO_EMOTIONS), lens.n_layers, lens.d_mlp, dtype=torch.bool), DEMO_EMOTIONS,
                          selector="all", top_frac=1.0, site="act", model_fingerprint=lens.fingerprint)
    sets = {"random": find_neurons(stats, "random", top_frac=TOP_FRAC), "all": all_units}
    res = deactivation_effects(lens, clips, sets)  # the audio encoder runs once per batch
    off = {e: res["base"][e] + res["all"]["delta"][0][i] / 100 for i, e in enumerate(DEMO_EMOTIONS)}
    for e in DEMO_EMOTIONS:  # measured .472 / .250 / .222 / .500 (from .861 / .917 / .917 / .917)
        assert off[e] < res["base"][e] - 0.35, off
    assert np.mean(list(off.values())) < 0.40  # measured .361 (chance .25)
    assert abs(res["random"]["SE"]) < 3 and abs(res["random"]["ACE"]) < 3


@pytest.fixture(scope="module")
def esn_sets(lens):
    """ConAct, MAD and three random sets at the demo budget, from the shipped identification clips."""
    from esn_lens.selectors import find_neurons

    stats, pool = identification_stats(lens, demo_clips("identification"))
    assert len(pool) == 35 * len(DEMO_EMOTIONS)  # correctly answered, balanced (limited by angry)
    sets = {n: find_neurons(stats, n, top_frac=TOP_FRAC) for n in ("conact", "mad")}
    sets |= {f"random{s}": find_neurons(stats, "random", top_frac=TOP_FRAC, seed=s) for s in range(3)}
    # 2 % of 1,024 units; ConAct fills every budget with units that prefer the emotion (k11 had one for happy)
    assert all(int(m.sum()) == 20 for ns in sets.values() for m in ns.masks)
    return sets


def test_conact_and_mad_neurons_are_causal_and_specific(lens, unseen, esn_sets):
    """Deactivation on a reduced unseen set (the first 24 clips of each emotion)."""
    clips = [c for e in DEMO_EMOTIONS for c in [c for c in unseen[0] if c.emotion == e][:24]]
    res = deactivation_effects(lens, clips, esn_sets)
    con, mad = res["conact"], res["mad"]
    assert con["SE"] <= -10  # measured -42.7 (angry -70.8, happy -62.5, neutral -25.0, sad -12.5)
    assert abs(con["ACE"]) <= abs(con["SE"]) / 3  # measured +1.0
    assert con["se_per"]["angry"] <= -50 and con["se_per"]["happy"] <= -50 and con["se_per"]["neutral"] <= -20
    assert all(v <= -12 for v in con["se_per"].values())  # every emotion's own units cost it (3 clips of 24 or more)
    assert con["SE"] - con["ACE"] < -30  # ESS -43.8; random's is within 2.1 of 0
    assert mad["SE"] <= -10  # measured -42.7 (angry -50.0, happy -45.8, neutral -62.5, sad -12.5)
    assert abs(mad["ACE"]) <= abs(mad["SE"]) / 3  # measured -4.5
    assert mad["SE"] - mad["ACE"] < -30  # measured -38.2
    for s in range(3):  # random units of the same budget move nothing
        assert abs(res[f"random{s}"]["SE"]) < 3 and abs(res[f"random{s}"]["ACE"]) < 3


def test_steering_raises_the_target_share(lens, unseen, esn_sets):
    """ConAct steering: every emotion's predicted share is monotone in alpha and rises by at least two clips
    more than random units of the same budget move it (96 clips: one clip = .0104)."""
    clips = [c for e in DEMO_EMOTIONS for c in [c for c in unseen[0] if c.emotion == e][:24]]
    alphas = (0, 1, 2, 4)
    shares = steering_shares(lens, clips, esn_sets["conact"], alphas)
    # measured angry .240 .250 .271 .281, happy .240 .250 .271 .271, neutral .281 .302 .333 .365, sad .240 .250 .250 .260
    for e in DEMO_EMOTIONS:
        assert all(b >= a for a, b in zip(shares[e], shares[e][1:])), (e, shares[e])
    rise = {e: v[-1] - v[0] for e, v in shares.items()}
    assert rise["angry"] >= 0.04 and rise["happy"] >= 0.03 and rise["neutral"] >= 0.08 and rise["sad"] >= 0.02, rise
    rnd = steering_shares(lens, clips, esn_sets["random0"], alphas)
    rnd_rise = {e: v[-1] - v[0] for e, v in rnd.items()}  # measured neutral -.052, the others 0
    assert all(rise[e] >= rnd_rise[e] + 2 / len(clips) - 1e-9 for e in DEMO_EMOTIONS), (rise, rnd_rise)


def test_training_script_smoke(tmp_path):
    script = Path(__file__).resolve().parents[1] / "scripts" / "train_demo_model.py"
    if not script.is_file():
        pytest.skip("training script not in this checkout")
    pytest.importorskip("espeakng_loader")
    # the shipped recipe's options (docs/demo_model.md, run "a5"), a few steps, on a corpus synthesised with
    # DEMO_RECIPES at intensity 0.25-1 and its plain (null-class) clips
    recipe = ["--freeze-encoder", "--l1", "0.05", "--mlp-necessity", "3", "--act", "relu", "--fire-weight", "1",
              "--fire-target", "0.15", "--fire-k", "4", "--selectivity", "2", "--assign-units", "--null-class", "plain",
              "--probe", "0.5", "--intensity", "0.25", "1.0"]
    r = subprocess.run([sys.executable, str(script), "--smoke", "--out", str(tmp_path), *recipe], capture_output=True,
                       text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    import json
    import re

    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["text_config"]["hidden_act"] == "relu"  # saved, so from_pretrained rebuilds ReLU MLPs
    diff = float(re.search(r"max \|diff\| = (\S+)", r.stdout).group(1))
    assert diff < 1e-3  # the cut-feature training forward equals the real 3000-frame forward
    info = json.loads(r.stdout.strip().splitlines()[-1])
    assert info["clips"] == 4 * 3 * 5  # 4 speakers x 3 clips x (4 emotions + the plain null class)
    assert info["intensity"] == [0.25, 1.0]  # the corpus was synthesised at graded intensity
    fire = [float(x) for x in re.findall(r" fire ([0-9.]+) ", r.stdout)]
    assert fire and all(0 < f < 1 for f in fire)  # the firing regulariser saw the MLP gates


def test_training_script_refuses_a_bad_null_class(tmp_path):
    """A null class that is an emotion, or that no clip of the corpus carries, is one clear line, not a run."""
    script = Path(__file__).resolve().parents[1] / "scripts" / "train_demo_model.py"
    if not script.is_file():
        pytest.skip("training script not in this checkout")
    pytest.importorskip("espeakng_loader")
    from esn_lens.data.synthetic import generate_corpus

    generate_corpus(tmp_path / "c", 1, 1)  # the four emotions, no plain clips
    for null, msg in (("angry", "is one of the emotions"), ("plain", "no clip of")):
        r = subprocess.run([sys.executable, str(script), "--corpus", str(tmp_path / "c"), "--out", str(tmp_path / "o"),
                            "--null-class", null], capture_output=True, text=True, timeout=120)
        assert r.returncode != 0 and msg in r.stderr and "Traceback" not in r.stderr, r.stderr[-1500:]


def _training_script():
    script = Path(__file__).resolve().parents[1] / "scripts" / "train_demo_model.py"
    if not script.is_file():
        pytest.skip("training script not in this checkout")
    return script


def test_selectivity_index_known_values():
    """The training script's selectivity term on a constructed batch: null-class clips (y = -1) are left out,
    ``assigned`` contrasts a unit with the emotion given to it instead of its own top emotion."""
    script = _training_script()
    sys.path.insert(0, str(script.parent))
    try:
        from train_demo_model import selectivity_index
    finally:
        sys.path.remove(str(script.parent))
    y = torch.tensor([0, 0, 1, -1])
    per_clip = torch.tensor([[0.8, 0.2], [0.8, 0.4], [0.0, 0.6], [0.9, 0.0]])  # (clips, units)
    si, w = selectivity_index(per_clip, y, 2)  # class rates: unit 0 (.8, 0), unit 1 (.3, .6)
    torch.testing.assert_close(si, torch.tensor([0.8 / 0.8001, 0.3 / 0.9001]))
    torch.testing.assert_close(w, torch.tensor([0.4, 0.45]))
    si, _ = selectivity_index(per_clip, y, 2, assigned=torch.tensor([0, 0]))  # unit 1 is angry's: .3 vs .6
    torch.testing.assert_close(si, torch.tensor([0.8 / 0.8001, -0.3 / 0.9001]))
    si, _ = selectivity_index(per_clip[[0, 1, 3]], y[[0, 1, 3]], 2, assigned=torch.tensor([1, 0]))  # no sad clip
    torch.testing.assert_close(si, torch.tensor([0.0, 0.3 / 0.3001]))  # unit 0's emotion is absent: 0
    si, _ = selectivity_index(per_clip, y, 3, rest="second")  # a third emotion absent from the batch is ignored
    torch.testing.assert_close(si, torch.tensor([0.8 / 0.8001, 0.3 / 0.9001]))


def test_training_script_refuses_bad_options(tmp_path):
    """Options that cannot work are refused by argparse with one clear line, before any corpus is read."""
    script = _training_script()
    for extra, msg in ((["--assign-units"], "--assign-units shapes the selectivity"),
                       (["--selectivity", "1", "--intensity", "0.6", "0.2"], "--intensity LOW HIGH"),
                       (["--intensity", "0.1", "1.5"], "--intensity LOW HIGH")):
        r = subprocess.run([sys.executable, str(script), "--smoke", "--out", str(tmp_path), *extra],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr, r.stderr[-1500:]
