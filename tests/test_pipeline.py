"""End-to-end runs of the pipeline on a saved tiny model: the run folder, results, report, kill-and-resume."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from esn_lens.cli import main
from esn_lens.neurons import NeuronSet
from esn_lens.errors import InputError
from esn_lens.evaluate import balanced_pool
from esn_lens.pipeline import STAGES, RunConfig, _digest, run_pipeline
from esn_lens.stats import NeuronStats
from pipeline_assets import EMOTIONS, planted_model_dir, write_text_corpus

TOP = "0.03125"  # 4 of the planted model's 2 x 64 units per emotion: exactly its planted units


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    return {"root": root, "model": planted_model_dir(root), "corpus": write_text_corpus(root / "corpus", 8)}


def run_args(a, out, *extra, top=TOP):
    return ["run", "--model", str(a["model"]), "--dataset", "manifest", "--data-dir", str(a["corpus"]),
            "--mode", "constrained", "--answer", "word", "--top-frac", top, "--alpha", "1", "--alpha", "4",
            "--batch-size", "2", "--checkpoint-every", "1", "--bootstrap", "200", "--threads", "1", "--no-progress",
            "--out", str(out), *extra]


@pytest.fixture(scope="module")
def reference(assets):
    out = assets["root"] / "reference"
    assert main(run_args(assets, out)) == 0
    return out


def _results(run: Path) -> dict:
    return json.loads((run / "results.json").read_text())


def _without_timing(r: dict) -> dict:
    return {k: v for k, v in r.items() if k != "timing"}


def test_run_folder_results_and_report(reference):
    r = _results(reference)
    # every promised key
    assert r["baseline"]["accuracy"] == 1.0 and set(r["baseline"]["per_class"]) == set(EMOTIONS)
    assert r["baseline"]["unparsed"] == 0 and len(r["baseline"]["ci"]) == 2
    assert set(r["selectors"]) == {"lap", "lape", "mad", "conact", "random"}
    for stage in STAGES:
        assert stage in r["timing"] or stage == "attribution"  # AtP runs only when the atp selector is asked for
    assert "attribution" not in r["timing"]
    assert r["timing"]["total"] > 0
    assert r["model"]["fingerprint"] and r["model"]["weights"] and r["model"]["n_layers"] == 2
    assert r["clips"]["identification"] == {e: 4 for e in EMOTIONS} == r["clips"]["evaluation"]
    assert r["clips"]["pool"] == {e: 4 for e in EMOTIONS}
    assert r["config"]["top_frac"] == float(TOP) and r["config"]["alphas"] == [1.0, 4.0]
    for name, s in r["selectors"].items():
        d, st = s["deactivation"], s["steering"]
        H = np.array(d["heatmap"])
        E = d["emotions"]
        assert H.shape == (4, 4)
        se, ace, ess = (np.array([d[k][e] for e in E]) for k in ("se", "ace", "ess"))
        np.testing.assert_allclose(np.diag(H), se, atol=1e-6)  # heatmap diagonal = SE
        np.testing.assert_allclose((H.sum(0) - np.diag(H)) / 3, ace, atol=1e-6)  # ACE = other masks' mean effect
        np.testing.assert_allclose(ess, se - ace, atol=1e-6)  # ESS = SE - ACE
        assert d["ess_mean"] == pytest.approx(ess.mean(), abs=1e-6)
        assert all(v == 0 for v in d["unparsed"].values())
        assert st["alphas"] == [1.0, 4.0] and set(st["target_shift"]) == set(EMOTIONS)
        np.testing.assert_allclose(st["target_shift_mean"], np.mean([st["target_shift"][e] for e in E], 0), atol=1e-6)
        assert sum(s["layer_counts"]["total"]) == sum(s["counts"].values()) == 16
        ns = NeuronSet.load(reference / "neurons" / f"{name}.safetensors", expect_fingerprint=r["model"]["fingerprint"])
        assert ns.layer_counts().sum(0).tolist() == s["layer_counts"]["total"]
    # the paper's signature on the planted model: ConAct / MAD remove exactly their emotion; random nothing
    for name in ("conact", "mad"):
        d = r["selectors"][name]["deactivation"]
        assert d["ess_mean"] == -1.0 and d["ci"]["ess_mean_minus_random"][1] < 0
        assert r["selectors"][name]["steering"]["target_shift_mean"][-1] > 0.5
    assert r["selectors"]["random"]["deactivation"]["ess_mean"] == 0.0
    overlap = r["layers"]["overlap"]
    assert overlap["selectors"] == ["lap", "lape", "mad", "conact", "random"]
    assert np.allclose(np.diag(overlap["mean"]), 1.0)
    # files
    assert NeuronStats.load(reference / "stats.safetensors").T.min() > 0
    assert not list((reference / "checkpoints").iterdir())
    pngs = sorted(p.name for p in (reference / "figures").glob("*.png"))
    assert {"deactivation_heatmaps.png", "dose_response.png", "layer_counts.png", "selector_overlap.png"} <= set(pngs)
    assert all((reference / "figures" / p).read_bytes()[:4] == b"\x89PNG" for p in pngs)
    md = (reference / "report.md").read_text()
    assert "ConAct: mean ESS -100.0 points vs random +0.0" in md and "clearly below random's" in md
    assert "| **MAD** | 4 | -100.0 | +0.0 | -100.0 |" in md
    html = (reference / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(pngs) and "figures/" not in html


def test_kill_and_resume_gives_identical_results(assets, reference):
    out = assets["root"] / "killed"
    # a --plugin module adds a checkpoint hook that holds the run after its first stats checkpoint
    plugins = assets["root"] / "plugins"
    plugins.mkdir(exist_ok=True)
    (plugins / "hold_after_stats_checkpoint.py").write_text(
        "import time\nfrom esn_lens.run import CHECKPOINT_HOOKS\n"
        "CHECKPOINT_HOOKS.append(lambda stage, consumed: time.sleep(60) if stage == 'stats' else None)\n")
    path = os.pathsep.join(p for p in (str(plugins), os.environ.get("PYTHONPATH", "")) if p)
    env = dict(os.environ, PYTHONPATH=path, HF_HUB_OFFLINE="1")
    exe = Path(sys.executable).with_name("esn-lens")  # this environment's console script (else the module)
    cmd = ([str(exe)] if exe.is_file() else [sys.executable, "-m", "esn_lens.cli"]) + run_args(
        assets, out, "--plugin", "hold_after_stats_checkpoint")
    proc = subprocess.Popen(cmd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ckpt = out / "checkpoints" / "stats.safetensors"
    deadline = time.time() + 120
    try:
        while not ckpt.exists():
            assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
            assert time.time() < deadline, "no stats checkpoint within 120 s"
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    prog = json.loads((out / "progress.json").read_text())
    assert prog["stages"]["pool"]["done"] and "stats" not in prog["stages"]

    # a run folder is never silently reused or mixed with another configuration or model
    foreign = assets["root"] / "foreign"
    shutil.copytree(out, foreign)
    assert main(run_args(assets, out)) == 2  # exists, no --resume
    assert main(run_args(assets, out, "--resume", top="0.0625")) == 2  # another budget
    from esn_lens.lens import Lens
    from esn_lens.testing.planted import build_planted

    model, tok, _ = build_planted(EMOTIONS, seed=1)
    cfg = RunConfig(model=str(assets["model"]), dataset="manifest", data_dir=str(assets["corpus"]), progress=False)
    with pytest.raises(Exception, match="another model or configuration"):
        run_pipeline(cfg, out, resume=True, lens=Lens(model, tok))
    # a checkpoint left by another configuration is refused even when progress.json was made to match
    prog_f = json.loads((foreign / "progress.json").read_text())
    other = RunConfig(model=str(assets["model"]), dataset="manifest", data_dir=str(assets["corpus"]), mode="constrained",
                      answer="word", top_frac=0.0625, alphas=(1.0, 4.0), batch_size=2, bootstrap=200)
    prog_f["config"] = other.identity()
    prog_f["key"] = _digest({"config": other.identity(), "model": prog_f["model"]})
    (foreign / "progress.json").write_text(json.dumps(prog_f))
    assert main(run_args(assets, foreign, "--resume", top="0.0625")) == 2

    assert main(run_args(assets, out, "--resume")) == 0
    assert _without_timing(_results(out)) == _without_timing(_results(reference))
    a, b = NeuronStats.load(out / "stats.safetensors"), NeuronStats.load(reference / "stats.safetensors")
    for n in ("K", "T", "sum", "sumsq", "n_clips"):
        assert torch.equal(getattr(a, n), getattr(b, n))
    for f in (reference / "neurons").glob("*.safetensors"):
        assert torch.equal(NeuronSet.load(f).masks, NeuronSet.load(out / "neurons" / f.name).masks)
    assert json.loads((out / "eval" / "steering.json").read_text()) == json.loads(
        (reference / "eval" / "steering.json").read_text())


def test_interrupted_evaluation_stage_resumes(assets, reference, monkeypatch):
    """An interruption inside an evaluation stage resumes from its checkpoint (Python API, same identity)."""
    from esn_lens.run import CHECKPOINT_HOOKS

    out = assets["root"] / "interrupted"
    cfg = RunConfig(model=str(assets["model"]), dataset="manifest", data_dir=str(assets["corpus"]), mode="constrained",
                    answer="word", top_frac=float(TOP), alphas=(1.0, 4.0), batch_size=2, checkpoint_every=1,
                    bootstrap=200, progress=False)

    def interrupt(stage, consumed):
        if stage == "steering":
            raise KeyboardInterrupt

    monkeypatch.setattr("esn_lens.run.folder.CHECKPOINT_HOOKS", [*CHECKPOINT_HOOKS, interrupt])
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(cfg, out)
    prog = json.loads((out / "progress.json").read_text())
    assert prog["stages"]["deactivation"]["done"] and "steering" not in prog["stages"]
    assert json.loads((out / "checkpoints" / "steering.json").read_text())["consumed"] == 2
    monkeypatch.undo()
    res = run_pipeline(cfg, out, resume=True)
    assert _without_timing(res) == _without_timing(_results(reference))
    assert not (out / "checkpoints" / "steering.json").exists()


def test_resume_errors_are_one_line(assets, reference, capsys):
    assert main(run_args(assets, reference, "--resume", top="0.0625")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "top_frac: 0.03125 there, 0.0625 now" in err and "Traceback" not in err


def test_balanced_pool_matches_identification_pool(assets):
    from esn_lens.evaluate import SEREvaluator, identification_pool
    from esn_lens.lens import Lens
    from esn_lens.testing.planted import build_planted, planted_clips

    model, tok, _ = build_planted(EMOTIONS)
    lens = Lens(model, tok)
    clips = planted_clips(3, EMOTIONS, seed=5)
    ev = SEREvaluator(lens, EMOTIONS, mode="constrained", answer="word")
    correct = ev.run(clips)["baseline"].correct()
    correct[0] = False  # make one emotion the smallest
    expected = identification_pool(ev, [c for i, c in enumerate(clips) if i != 0], seed=3)
    got = balanced_pool([c for i, c in enumerate(clips) if i != 0], correct[1:], EMOTIONS, seed=3)
    assert [c.utterance_id for c in got] == [c.utterance_id for c in expected]
    assert len(got) == 4 * 2 and sorted({c.emotion for c in got}) == sorted(EMOTIONS)  # 2 per emotion
    with pytest.raises(InputError, match=r"too few clips correctly for angry \(0 of 3\)"):
        balanced_pool(clips, np.zeros(len(clips), bool), EMOTIONS, min_per_emotion=1)


def test_verdict_below_above_or_neither():
    from esn_lens.report import verdict

    def res(ci):
        return {"selectors": {"mad": {"deactivation": {"ess_mean": -5.0, "ci": {"ess_mean_minus_random": ci}}},
                              "random": {"deactivation": {"ess_mean": 0.0}}}}

    assert "**clearly below random's**: the interval excludes 0." in verdict(res([-9.0, -1.0]), "mad")
    above = verdict(res([7.4, 16.4]), "mad")
    assert "**clearly above random's**" in above and "not specific" in above
    assert "**not clearly below random's**: the interval includes 0" in verdict(res([-3.0, 2.0]), "mad")
    assert "no bootstrap interval" in verdict(res(None), "mad")


def test_weights_digest_samples_large_tensors_in_range():
    from esn_lens.run.data import weights_digest

    big = torch.nn.Embedding(28312128 // 576, 576)  # 28,312,128 values: a float32 linspace overflows the last index
    a = weights_digest(big)
    with torch.no_grad():
        big.weight[-1, -1] += 1.0  # the last value is among the samples
    assert weights_digest(big) != a
