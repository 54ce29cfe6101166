"""One-line CLI errors for OS failures and damaged run folders (issue #15, item 5).

Disk full (errno 28), a read-only file system (errno 30), a file where a folder should be, a damaged
``pool.json``, ``clips.json`` holding ``[]`` and a missing key each give ``esn-lens CMD: error: ...`` on one
line of stderr and exit status 2; ``--debug`` shows the traceback instead.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile

import pytest

from esn_lens.cli import main
from pipeline_assets import planted_model_dir, run_main, write_text_corpus


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_errors")
    return {"root": root, "model": planted_model_dir(root), "corpus": write_text_corpus(root / "corpus", 4)}


def args(a, out, command="run", *extra):
    return [command, "--model", str(a["model"]), "--dataset", "manifest", "--data-dir", str(a["corpus"]),
            "--mode", "constrained", "--answer", "word", "--top-frac", "0.03125", "--selector", "conact",
            "--alpha", "2", "--bootstrap", "0", "--batch-size", "8", "--threads", "1", "--no-progress",
            "--out", str(out), *extra]


@pytest.fixture(scope="module")
def finished(assets):
    out = assets["root"] / "finished"
    assert main(args(assets, out)) == 0
    return out


def one_line_error(capsys, command="run") -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"esn-lens {command}: error: ") and "Traceback" not in err
    return err


def damaged_copy(finished, tmp_path, name, text):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    (run / name).write_text(text)
    return run


# ---------------------------------------------------------------------- OS errors
def test_disk_full_is_one_line(assets, tmp_path, capsys, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    out = tmp_path / "run"
    assert run_main(args(assets, out)) == 2
    err = one_line_error(capsys)
    assert f"{out}{os.sep}" in err and "disk full (No space left on device)" in err and "--resume" in err
    assert not any(p.name.endswith(".tmp") for p in out.rglob("*"))  # no half-written temporary file stays


def test_read_only_file_system_is_one_line(assets, tmp_path, capsys, monkeypatch):
    def read_only(*a, dir=None, **kw):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dir))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    out = tmp_path / "run"
    assert run_main(args(assets, out)) == 2
    err = one_line_error(capsys)
    assert "read-only file system" in err.lower() and str(out) in err


def test_out_below_a_file_is_one_line(assets, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    assert run_main(args(assets, tmp_path / "afile" / "run")) == 2
    err = one_line_error(capsys)
    assert "afile" in err and ("not a directory" in err.lower() or "is a file" in err)


def test_debug_shows_the_traceback(assets, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device")))
    with pytest.raises(OSError) as ei:
        main(args(assets, tmp_path / "run", "run", "--debug"))
    assert ei.value.errno == errno.ENOSPC


# ---------------------------------------------------------------------- damaged run folders
@pytest.mark.parametrize("name, text, needle", [
    ("pool.json", "{\"ids\": [\"u0\", ", "pool.json: damaged run file (not JSON"),
    ("clips.json", "[]", "clips.json: damaged run file (expected a JSON object, found list []"),
    ("progress.json", "\x00\x01garbage", "progress.json"),
], ids=["garbage_pool", "empty_list_clips", "garbage_progress"])
def test_damaged_run_json_is_one_line(finished, tmp_path, capsys, assets, name, text, needle):
    run = damaged_copy(finished, tmp_path, name, text)
    capsys.readouterr()
    assert run_main(args(assets, run, "run", "--resume")) == 2
    err = one_line_error(capsys)
    assert needle in err and str(run) in err


def test_missing_key_names_the_file_and_key(finished, tmp_path, capsys, assets):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    d = json.loads((run / "eval" / "deactivation.json").read_text())
    del d["labels"]
    (run / "eval" / "deactivation.json").write_text(json.dumps(d))
    capsys.readouterr()
    assert run_main(args(assets, run, "run", "--resume")) == 2
    err = one_line_error(capsys)
    assert "deactivation.json: damaged run file (no key 'labels')" in err


def test_damaged_results_json_for_report(finished, tmp_path, capsys):
    run = damaged_copy(finished, tmp_path, "results.json", "[1, 2")
    capsys.readouterr()
    assert run_main(["report", str(run)]) == 2
    assert "results.json: damaged run file (not JSON" in one_line_error(capsys, "report")
