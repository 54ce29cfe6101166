"""The ``esn-lens`` command: listings, one-line errors, discover/validate transfer, audio model folder, demo."""
from __future__ import annotations

import json
import shutil
import time

import pytest

from esn_lens.cli import main
from pipeline_assets import EMOTIONS, audio_model_dir, planted_model_dir, write_text_corpus, write_tone_corpus


def run_main(argv) -> int:
    try:
        return main(argv)
    except SystemExit as e:  # argparse errors
        return int(e.code)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    return {"root": root, "model": planted_model_dir(root), "a": write_text_corpus(root / "corpus_a", 8, seed=0),
            "b": write_text_corpus(root / "corpus_b", 8, seed=1, prefix="v")}


def common(a, corpus, out):
    return ["--model", str(a["model"]), "--dataset", "manifest", "--data-dir", str(corpus), "--mode", "constrained",
            "--answer", "word", "--batch-size", "8", "--threads", "1", "--no-progress", "--out", str(out)]


def test_models_and_datasets_listings(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "qwen2_audio" in out and "audio_flamingo3" in out and "qwen2_5_omni" in out
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    assert "iemocap" in out and "manifest" in out and "manifest.csv with columns" in out


@pytest.mark.parametrize("argv, needle", [
    (["run", "--model", "{model}", "--dataset", "nope", "--data-dir", "{a}", "--out", "{out}"], "unknown dataset 'nope'"),
    (["run", "--model", "{model}", "--dataset", "manifest", "--data-dir", "{root}/missing", "--out", "{out}"],
     "data folder"),
    (["run", "--model", "{root}/no_model", "--dataset", "manifest", "--data-dir", "{a}", "--out", "{out}"],
     "model folder"),
    (["discover", "--model", "{model}", "--dataset", "manifest", "--data-dir", "{a}", "--selector", "best",
      "--out", "{out}"], "unknown selector(s) ['best']"),
    (["run", "--model", "{model}", "--dataset", "manifest", "--data-dir", "{a}", "--top-frac", "2"], "--top-frac"),
    (["run", "--model", "{model}", "--dataset", "manifest", "--data-dir", "{a}"], "--out RUN_DIR is required"),
    (["validate", "--model", "{model}", "--dataset", "manifest", "--data-dir", "{a}", "--out", "{out}"],
     "needs neuron files"),
    (["validate", "--model", "{model}", "--dataset", "manifest", "--data-dir", "{a}", "--neurons", "{root}/x.st",
      "--out", "{out}"], "neuron file"),
    (["report", "{root}/no_run"], "does not exist"),
    (["report", "{root}"], "holds no results.json"),
    (["run", "--model", "{model}", "--dataset", "manifest", "--data-dir", "{a}", "--out", "{out}", "--plugin",
      "no_such_module_xyz"], "cannot import plugin"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_arguments_print_one_line_and_exit_2(assets, capsys, argv, needle):
    fill = {"model": assets["model"], "a": assets["a"], "root": assets["root"], "out": assets["root"] / "never"}
    assert run_main([x.format(**fill) for x in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert needle in err and "Traceback" not in err
    assert not (assets["root"] / "never").exists()


def test_discover_then_transfer_and_compare(assets, capsys):
    ra, rb = assets["root"] / "run_a", assets["root"] / "run_b"
    assert main(["discover", *common(assets, assets["a"], ra), "--top-frac", "0.03125"]) == 0
    res_a = json.loads((ra / "results.json").read_text())
    assert "baseline" not in res_a and set(res_a["selectors"]) == {"lap", "lape", "mad", "conact", "random"}
    assert all("deactivation" not in s for s in res_a["selectors"].values())
    assert (ra / "figures" / "layer_counts.png").exists() and (ra / "stats.safetensors").exists()
    capsys.readouterr()
    # run on corpus B: own ConAct + random, plus ConAct found on corpus A (cross-dataset transfer)
    assert main(["run", *common(assets, assets["b"], rb), "--top-frac", "0.03125", "--selector", "conact",
                 "--selector", "random", "--neurons", str(ra / "neurons" / "conact.safetensors"), "--alpha", "2",
                 "--bootstrap", "100"]) == 0
    out = capsys.readouterr().out
    assert "ConAct@corpus_a" in out and "baseline accuracy 100.0%" in out
    rb_res = json.loads((rb / "results.json").read_text())
    sel = rb_res["selectors"]
    assert set(sel) == {"conact", "random", "conact@corpus_a"}
    assert sel["conact@corpus_a"]["source"].endswith("conact.safetensors")
    assert sel["conact@corpus_a"]["deactivation"]["ess_mean"] == -1.0  # the planted units transfer exactly
    cross = rb_res["layers"]["cross_dataset"]["conact@corpus_a"]
    assert cross["own"] == "conact" and all(cross["jaccard"][i][i] == 1.0 for i in range(4))
    assert (rb / "figures" / "cross_conact_corpus_a.png").exists()
    # validate only: transferred sets and an automatic random baseline of the same budget
    rc = assets["root"] / "run_c"
    assert main(["validate", *common(assets, assets["b"], rc), "--neurons", str(ra / "neurons"), "--eval-split", "all",
                 "--eval-per-emotion", "3", "--alpha", "1", "--bootstrap", "0"]) == 0
    sel_c = json.loads((rc / "results.json").read_text())["selectors"]
    assert {"lap@corpus_a", "conact@corpus_a", "random@corpus_a"} <= set(sel_c)
    assert json.loads((rc / "clips.json").read_text())["counts"]["evaluation"] == {e: 3 for e in EMOTIONS}
    # report with the cross-dataset overlap of two runs
    assert main(["report", str(rb), "--compare", str(ra)]) == 0
    assert (rb / "figures" / "compare_conact.png").exists() and "Cross-dataset overlap" in (rb / "report.md").read_text()


def _demo_available() -> bool:
    try:
        from esn_lens.demo_model import demo_clips, demo_model_dir

        return (demo_model_dir() / "config.json").is_file() and bool(demo_clips("unseen"))
    except Exception:
        return False


@pytest.mark.skipif(_demo_available(), reason="the demo test covers the audio path (Qwen2-Audio) end to end")
def test_audio_model_from_local_folder(tmp_path, capsys):
    model = audio_model_dir(tmp_path)
    corpus = write_tone_corpus(tmp_path / "tones", speakers=4, per_speaker=3)
    out = tmp_path / "run"
    rc = main(["run", "--model", str(model), "--dataset", "manifest", "--data-dir", str(corpus), "--mode", "constrained",
               "--top-frac", "0.05", "--selector", "mad", "--selector", "random", "--alpha", "2",
               "--eval-per-emotion", "2", "--batch-size", "8", "--threads", "1", "--no-progress", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    r = json.loads((out / "results.json").read_text())
    assert r["model"]["class"] == "Qwen2AudioForConditionalGeneration" and r["model"]["adapter"] == "qwen2_audio"
    assert r["clips"]["evaluation"] == {e: 2 for e in ("neutral", "happy", "sad", "angry")}
    assert r["selectors"]["mad"]["counts"] == {e: round(0.05 * 128) for e in ("neutral", "happy", "sad", "angry")}


@pytest.mark.skipif(not _demo_available(), reason="the demo model's assets are not shipped yet")
def test_demo_quick(tmp_path, capsys):
    out = tmp_path / "demo"
    t0 = time.perf_counter()
    assert main(["demo", "--quick", "--out", str(out), "--no-progress"]) == 0
    wall = time.perf_counter() - t0
    r = json.loads((out / "results.json").read_text())
    assert set(r["selectors"]) == {"lap", "lape", "mad", "conact", "random"}
    for s in r["selectors"].values():
        assert {"heatmap", "se", "ace", "ess", "ess_mean"} <= set(s["deactivation"])
        assert {"alphas", "target_shift"} <= set(s["steering"])
    assert (out / "report.html").exists() and len(list((out / "neurons").glob("*.safetensors"))) == 5
    assert wall < 300  # the full demo's budget; --quick takes well under a minute on 2 idle cores
    shutil.rmtree(out)
