"""The run's stage registry, products context and accumulate loop, used through public names only: a stage defined
here joins a run (after the stage it names), streams its own accumulator with checkpoints and resume, and a stage
that breaks its declaration fails with one line naming it."""
from __future__ import annotations

import json

import pytest
import torch

from esn_lens.run import (CHECKPOINT_HOOKS, Run, RunConfig, StageError, register_stage, run_pipeline, stage_names,
                          stage_order, unregister_stage)
from pipeline_assets import EMOTIONS, planted_model_dir, write_text_corpus


class PoolTally:
    """Per emotion: the number of clips and their total audio samples (an accumulator of the public protocol)."""

    def __init__(self, emotions):
        self.emotions = list(emotions)
        self.n = torch.zeros(len(self.emotions), dtype=torch.float64)
        self.samples = torch.zeros(len(self.emotions), dtype=torch.float64)

    def add(self, clips):
        for c in clips:
            i = self.emotions.index(c.emotion)
            self.n[i] += 1
            self.samples[i] += len(c.load()[0])

    def merge(self, other):
        self.n += other.n
        self.samples += other.samples

    def state_dict(self):
        return {"meta": {"emotions": self.emotions}, "n": self.n.clone(), "samples": self.samples.clone()}

    def load_state_dict(self, sd):
        assert sd["meta"]["emotions"] == self.emotions
        self.n.copy_(sd["n"])
        self.samples.copy_(sd["samples"])

    def empty(self):
        return PoolTally(self.emotions)


def _tally_stage(run):
    by_id = {c.utterance_id: c for c in run.split.identification}
    run.pool_tally = run.accumulate(PoolTally(run.split.emotions), [by_id[i] for i in run.pool_ids],
                                    file="pool_tally.safetensors")


def _readme_stage_code() -> str:
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    return next(b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S) if "@register_stage" in b)


@pytest.fixture
def plugin_stage():
    register_stage("pool_tally", needs=["split", "pool_ids"], produces=["pool_tally"], after="stats")(_tally_stage)
    exec(_readme_stage_code(), {})  # the README's example stage: pool_size
    yield "pool_tally"
    unregister_stage("pool_tally")
    unregister_stage("pool_size")


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("registry")
    return {"root": root, "model": planted_model_dir(root), "corpus": write_text_corpus(root / "corpus", 3)}


def _cfg(a, **kw):
    return RunConfig(model=str(a["model"]), dataset="manifest", data_dir=str(a["corpus"]), mode="constrained",
                     answer="word", top_frac=0.03125, selectors=("conact",), validate=False, batch_size=2,
                     checkpoint_every=1, progress=False, **kw)


def test_builtin_order_and_a_plugin_stage_after_stats(plugin_stage):
    assert stage_names()[:3] == ("data", "pool", "stats")
    names = stage_names()
    assert names.index("pool_tally") == names.index("stats") + 1
    assert names[-6:] == ("neurons", "top", "deactivation", "steering", "analysis", "report")
    assert [s.name for s in stage_order()] == list(names)


def test_plugin_stage_streams_checkpoints_and_resumes_identically(assets, plugin_stage, monkeypatch):
    full = Run(assets["root"] / "full", _cfg(assets))
    full.execute()
    pool = json.loads((assets["root"] / "full" / "pool.json").read_text())
    want = torch.tensor([float(pool["counts"][e]) for e in EMOTIONS], dtype=torch.float64)
    tally = full.products["pool_tally"]
    assert torch.equal(tally.n, want) and tally.n.sum() == len(pool["ids"])
    assert full.products["pool_size"] == len(pool["ids"]) == 8  # the README's stage
    prog = json.loads((assets["root"] / "full" / "progress.json").read_text())["stages"]
    assert list(prog).index("pool_tally") == list(prog).index("stats") + 1
    assert (assets["root"] / "full" / "pool_tally.safetensors").exists()

    # stopped after the plugin stage's first checkpoint, resumed: the same tally; a resumed done stage re-reads it
    out = assets["root"] / "killed"

    def stop(stage, consumed):
        if stage == "pool_tally":
            raise KeyboardInterrupt

    monkeypatch.setattr("esn_lens.run.folder.CHECKPOINT_HOOKS", [*CHECKPOINT_HOOKS, stop])
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(_cfg(assets), out)
    assert (out / "checkpoints" / "pool_tally.safetensors").exists()
    assert "pool_tally" not in json.loads((out / "progress.json").read_text())["stages"]
    monkeypatch.undo()
    again = Run(out, _cfg(assets), resume=True)
    again.execute()
    assert torch.equal(again.products["pool_tally"].n, tally.n)
    assert torch.equal(again.products["pool_tally"].samples, tally.samples)
    assert not (out / "checkpoints" / "pool_tally.safetensors").exists()
    done = Run(out, _cfg(assets), resume=True)
    done.execute()
    assert torch.equal(done.products["pool_tally"].n, tally.n)


@pytest.mark.parametrize("body,needs,produces,msg", [
    (lambda run: setattr(run, "x_out", run.stats), ["split"], ["x_out"], "reads 'stats', which it does not declare"),
    (lambda run: setattr(run, "sets", {}), ["split"], ["x_out"], "sets 'sets', which it does not declare"),
    (lambda run: None, ["split"], ["x_out"], "declares produces=['x_out'] but did not set ['x_out']"),
])
def test_a_stage_breaking_its_declaration_fails_naming_it(assets, body, needs, produces, msg):
    register_stage("bad_stage", needs=needs, produces=produces, after="data", before="pool")(body)
    try:
        with pytest.raises(StageError) as e:
            run_pipeline(_cfg(assets), assets["root"] / f"bad_{len(msg)}")
    finally:
        unregister_stage("bad_stage")
    assert "stage 'bad_stage'" in str(e.value) and msg in str(e.value) and "\n" not in str(e.value)


def test_registration_and_order_errors():
    with pytest.raises(StageError, match="stage 'dup' produces 'stats', which stage 'stats' already produces"):
        register_stage("dup", produces=["stats"])(lambda run: None)
    register_stage("orphan", needs=["nothing_makes_this"])(lambda run: None)
    try:
        with pytest.raises(StageError, match="stage 'orphan' needs 'nothing_makes_this', which no registered"):
            stage_order()
    finally:
        unregister_stage("orphan")
    register_stage("loop", after="report", before="data")(lambda run: None)
    try:
        with pytest.raises(StageError, match="wait on each other"):
            stage_order()
    finally:
        unregister_stage("loop")
    assert "loop" not in stage_names() and "orphan" not in stage_names()
