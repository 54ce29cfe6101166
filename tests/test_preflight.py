"""Pre-flight before any model loads, lock file, no half-made folders, model path identity (issue #15, items 1/6).

A model folder whose config cannot be loaded stands in for "the model loader": each refusal below would
otherwise have printed "cannot load model"; printing the pre-flight's error proves the model never loaded.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile

import pytest

from esn_lens.cli import main
from esn_lens.pipeline import LOCK_NAME, RunConfig, normalise_model
from pipeline_assets import planted_model_dir, run_main, write_text_corpus


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("preflight")
    broken = root / "broken_model"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"model_type": "no_such_model_type", "architectures": ["Nope"]}))
    return {"root": root, "model": planted_model_dir(root), "broken": broken,
            "corpus": write_text_corpus(root / "corpus", 4)}


def args(model, corpus, out, *extra):
    return ["run", "--model", str(model), "--dataset", "manifest", "--data-dir", str(corpus), "--mode", "constrained",
            "--answer", "word", "--top-frac", "0.03125", "--selector", "conact", "--alpha", "2", "--bootstrap", "0",
            "--batch-size", "8", "--threads", "1", "--no-progress", "--out", str(out), *extra]


def error_of(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "cannot load model" not in err, err  # the model loader was never called
    return err


@pytest.fixture(scope="module")
def finished(assets):
    out = assets["root"] / "finished"
    assert main(args(assets["model"], assets["corpus"], out)) == 0
    return out


def test_broken_model_fails_at_loading_and_leaves_no_folder(assets, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_main(args(assets["broken"], assets["corpus"], out)) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot load" in err and "broken_model" in err and len(err.splitlines()) == 1
    assert not out.exists()  # the failed command made no half run folder that would block --out


def test_out_holding_a_run_is_refused_before_the_model_loads(assets, finished, capsys):
    assert run_main(args(assets["broken"], assets["corpus"], finished)) == 2
    assert f"{finished} already holds a run; pass --resume" in error_of(capsys)


def test_out_a_file_is_refused(assets, tmp_path, capsys):
    f = tmp_path / "results.txt"
    f.write_text("not a folder")
    assert run_main(args(assets["broken"], assets["corpus"], f)) == 2
    assert f"--out {f} is a file, not a folder" in error_of(capsys)
    assert f.read_text() == "not a folder"


def test_out_not_empty_is_refused(assets, tmp_path, capsys):
    (tmp_path / "notes.md").write_text("mine")
    assert run_main(args(assets["broken"], assets["corpus"], tmp_path)) == 2
    assert "exists and is not empty" in error_of(capsys)


def test_out_read_only_is_refused(assets, tmp_path, capsys, monkeypatch):
    def read_only(*a, dir=None, **kw):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dir))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    out = tmp_path / "sub" / "run"
    assert run_main(args(assets["broken"], assets["corpus"], out)) == 2
    assert f"--out {out}: cannot write in {tmp_path} (Read-only file system)" in error_of(capsys)
    assert not (tmp_path / "sub").exists()


def test_unknown_label_set_is_refused_with_the_list(assets, tmp_path, capsys):
    assert run_main(args(assets["broken"], assets["corpus"], tmp_path / "run", "--label-set", "nope")) == 2
    err = error_of(capsys)
    assert "unknown label set 'nope'; registered:" in err and "iemocap4" in err
    assert not (tmp_path / "run").exists()


def test_corpus_without_clips_is_refused(assets, tmp_path, capsys):
    empty = tmp_path / "empty_corpus"
    empty.mkdir()
    (empty / "manifest.csv").write_text("path,emotion,speaker,utterance_id,text\n")
    assert run_main(args(assets["broken"], empty, tmp_path / "run")) == 2
    err = error_of(capsys)
    assert "empty_corpus" in err
    assert not (tmp_path / "run").exists()


def test_lock_stops_a_second_run_on_one_folder(assets, finished, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    (run / LOCK_NAME).write_text(f"{os.getppid()} 2026-01-01T00:00:00\n")  # a live process holds it
    assert run_main(args(assets["broken"], assets["corpus"], run, "--resume")) == 2
    assert f"{run} is in use by another esn-lens run (pid {os.getppid()}" in error_of(capsys)
    assert (run / LOCK_NAME).exists()


def test_stale_lock_is_taken_over_and_released(assets, finished, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    (run / LOCK_NAME).write_text("999999999 2026-01-01T00:00:00\n")  # no such process
    assert run_main(args(assets["model"], assets["corpus"], run, "--resume")) == 0
    assert not (run / LOCK_NAME).exists()
    assert json.loads((run / "results.json").read_text())["baseline"]["accuracy"] == 1.0


def test_relative_and_absolute_model_paths_are_one_run(assets, finished, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    monkeypatch.chdir(assets["model"].parent)
    rel = os.path.join(".", assets["model"].name)
    assert normalise_model(rel) == normalise_model(str(assets["model"])) == str(assets["model"].resolve())
    assert run_main(args(rel, assets["corpus"], run, "--resume")) == 0, capsys.readouterr().err
    r = json.loads((run / "results.json").read_text())
    assert r["model"]["name"] == str(assets["model"].resolve()) and r["config"]["model"] == r["model"]["name"]


def test_trust_remote_code_is_off_by_default_and_recorded(assets, finished, tmp_path):
    assert json.loads((finished / "config.json").read_text())["trust_remote_code"] is False
    out = tmp_path / "trusted"
    assert main(args(assets["model"], assets["corpus"], out, "--trust-remote-code")) == 0
    assert json.loads((out / "config.json").read_text())["trust_remote_code"] is True
    assert RunConfig().trust_remote_code is False
