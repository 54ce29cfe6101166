"""Stage lines go through the logging module: shown by default, hidden by --quiet, debug lines with --verbose."""
import logging

import pytest

from pipeline_assets import planted_model_dir, run_main, write_text_corpus


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("logging")
    return {"root": root, "model": planted_model_dir(root), "corpus": write_text_corpus(root / "corpus", 4)}


def discover(a, out, *extra):
    return ["discover", "--model", str(a["model"]), "--dataset", "manifest", "--data-dir", str(a["corpus"]),
            "--mode", "constrained", "--answer", "word", "--top-frac", "0.03125", "--selector", "conact",
            "--batch-size", "8", "--threads", "1", "--out", str(out), *extra]


@pytest.fixture(autouse=True)
def restore_level():
    root = logging.getLogger("esn_lens")
    level, propagate, handlers = root.level, root.propagate, list(root.handlers)
    yield
    root.setLevel(level)
    root.propagate = propagate
    root.handlers[:] = handlers


def test_stage_lines_default_quiet_verbose(assets, tmp_path, capsys):
    assert run_main(discover(assets, tmp_path / "default")) == 0
    err = capsys.readouterr().err
    assert "[pool] identification accuracy" in err and "[neurons] conact:" in err and "run configuration" not in err
    assert run_main(discover(assets, tmp_path / "quiet", "--quiet")) == 0
    out = capsys.readouterr()
    assert "[pool]" not in out.err and "check clips" not in out.err
    assert "conact" in out.out  # the summary is the command's output, not a log line
    assert run_main(discover(assets, tmp_path / "verbose", "--verbose")) == 0
    err = capsys.readouterr().err
    assert "run configuration: {" in err and "[neurons] conact:" in err
