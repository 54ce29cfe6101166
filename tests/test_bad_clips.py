"""Bad clips do not abort a run; unknown labels are refused (issue #15, items 2/3).

A manifest with a NaN clip, a missing file and a stereo 44.1 kHz clip completes a run: the stereo clip is
downmixed and resampled and used; results.json, clips.json and the report name the 2 skipped clips with their
reasons. ``--on-bad-clip fail`` refuses the run before the model loads, naming the clips.
"""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import soundfile as sf

from esn_lens.cli import main
from pipeline_assets import planted_model_dir, run_main, write_text_corpus


def add_rows(corpus, rows):
    with open(corpus / "manifest.csv", "a", newline="") as f:
        csv.writer(f).writerows(rows)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_clips")
    corpus = write_text_corpus(root / "corpus", 6)
    with open(corpus / "manifest.csv") as f:
        first = next(r for r in csv.DictReader(f) if r["emotion"] == "angry")
    t = np.arange(int(0.2 * 44100)) / 44100
    stereo = np.stack([0.3 * np.sin(2 * np.pi * 220 * t), 0.3 * np.sin(2 * np.pi * 330 * t)], axis=1)
    sf.write(str(corpus / "wav" / "stereo.wav"), stereo, 44100, subtype="PCM_16")
    nan = np.zeros(1600, dtype=np.float32)
    nan[100] = np.nan
    sf.write(str(corpus / "wav" / "nan.wav"), nan, 16000, subtype="FLOAT")
    add_rows(corpus, [["wav/nan.wav", "angry", first["speaker"], "bad_nan", first["text"]],
                      ["wav/gone.wav", "angry", first["speaker"], "bad_missing", first["text"]],
                      ["wav/stereo.wav", "angry", first["speaker"], "ok_stereo", first["text"]]])
    return {"root": root, "model": planted_model_dir(root), "corpus": corpus}


def args(model, corpus, out, *extra):
    return ["run", "--model", str(model), "--dataset", "manifest", "--data-dir", str(corpus), "--mode", "constrained",
            "--answer", "word", "--top-frac", "0.03125", "--selector", "conact", "--alpha", "2", "--bootstrap", "0",
            "--batch-size", "8", "--threads", "1", "--no-progress", "--out", str(out), *extra]


def test_run_completes_and_names_the_skipped_clips(assets, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(args(assets["model"], assets["corpus"], out)) == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    r = json.loads((out / "results.json").read_text())
    skipped = {s["id"]: s["reason"] for s in r["clips"]["skipped"]}
    assert set(skipped) == {"bad_nan", "bad_missing"}
    assert skipped["bad_nan"] == "audio contains NaN or inf samples"
    assert skipped["bad_missing"] == "audio file listed but not on disk"
    clips = json.loads((out / "clips.json").read_text())
    used = clips["ids"]["identification"] + clips["ids"]["evaluation"]
    assert "ok_stereo" in used and "bad_nan" not in used and "bad_missing" not in used
    assert [s["id"] for s in clips["source"]["skipped"]] == ["bad_missing", "bad_nan"]
    report = (out / "report.md").read_text()
    assert "Skipped 2 bad clip(s): bad_missing (audio file listed but not on disk); bad_nan (audio contains NaN" in report
    assert r["baseline"]["accuracy"] == 1.0
    assert "Traceback" not in err


def test_on_bad_clip_fail_refuses_before_the_model_loads(assets, tmp_path, capsys):
    broken = tmp_path / "broken_model"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    out = tmp_path / "run"
    assert run_main(args(broken, assets["corpus"], out, "--on-bad-clip", "fail")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot load" not in err
    assert ("error: 2 bad clip(s) in manifest: bad_missing: audio file listed but not on disk; bad_nan: audio contains "
            "NaN or inf samples (--on-bad-clip skip runs without them)") in err
    assert not out.exists()


def test_unknown_labels_are_refused_unless_label_set_all(assets, tmp_path, capsys):
    corpus = write_text_corpus(tmp_path / "odd", 4)
    with open(corpus / "manifest.csv") as f:
        rows = list(csv.reader(f))
    rows[1][1], rows[2][1] = "bored", "3"
    with open(corpus / "manifest.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    broken = tmp_path / "broken_model"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    assert run_main(args(broken, corpus, tmp_path / "run")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot load" not in err
    assert "labels ['bored', '3'] are not known emotions" in err or "labels ['3', 'bored'] are not known emotions" in err
    assert "--label-set (" in err and "iemocap4" in err and "--label-set all" in err
    # with --label-set all the labels are kept as emotions: the run gets past the pre-flight to the model
    assert run_main(args(broken, corpus, tmp_path / "run", "--label-set", "all")) == 2
    assert "cannot load" in capsys.readouterr().err


def test_resume_after_fixing_a_clip_continues_with_the_clips_it_started_with(assets, tmp_path, capsys):
    import shutil

    corpus = tmp_path / "corpus"
    shutil.copytree(assets["corpus"], corpus)
    out = tmp_path / "run"
    assert main(args(assets["model"], corpus, out)) == 0
    before = json.loads((out / "results.json").read_text())
    capsys.readouterr()
    sf.write(str(corpus / "wav" / "nan.wav"), 0.2 * np.sin(np.arange(1600) / 3.0), 16000)  # the bad clip is fixed
    with_lines = [a for a in args(assets["model"], corpus, out, "--resume") if a != "--no-progress"]  # stage lines on
    assert main(with_lines) == 0
    err = capsys.readouterr().err
    assert "continuing with the" in err and "bad_nan" in err, err
    after = json.loads((out / "results.json").read_text())
    assert after["selectors"] == before["selectors"]
    (corpus / "wav" / "stereo.wav").unlink()  # a clip the run used is gone: refused, naming it
    assert run_main(args(assets["model"], corpus, out, "--resume")) == 2
    assert "ok_stereo" in capsys.readouterr().err
