"""``esn-lens run`` data-parallel under ``torchrun --nproc_per_node 2`` (gloo, CPU) equals one process.

The two ranks split each chunk of the statistics and of every evaluation, sum the statistics and gather the
predictions; rank 0 writes the run folder. Same planted model and corpus as tests/test_pipeline.py.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from esn_lens.cli import main
from esn_lens.neurons import NeuronSet
from esn_lens.stats import NeuronStats
from pipeline_assets import planted_model_dir, write_text_corpus


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _args(model, corpus, out):
    return ["run", "--model", str(model), "--dataset", "manifest", "--data-dir", str(corpus), "--mode", "constrained",
            "--answer", "word", "--top-frac", "0.03125", "--alpha", "1", "--alpha", "4", "--batch-size", "2",
            "--checkpoint-every", "2", "--bootstrap", "200", "--threads", "1", "--no-progress", "--out", str(out)]


def _results(d):
    r = json.loads((d / "results.json").read_text())
    r.pop("timing")
    return r


def test_torchrun_two_ranks_give_the_single_process_results(tmp_path):
    model, corpus = planted_model_dir(tmp_path), write_text_corpus(tmp_path / "corpus", 8)
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(_args(model, corpus, one)) == 0
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--nnodes", "1", "--master_addr",
           "127.0.0.1", "--master_port", str(_free_port()), "-m", "esn_lens.cli", *_args(model, corpus, two)]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"torchrun did not finish in 300 s:\n{(e.stderr or '')[-3000:]}")
    assert proc.returncode == 0, proc.stderr[-4000:]
    # the same figures: metrics, intervals, layer analysis, clip counts, model identity
    assert _results(two) == _results(one)
    r = _results(two)
    assert r["selectors"]["conact"]["deactivation"]["ess_mean"] == -1.0
    assert r["selectors"]["random"]["deactivation"]["ess_mean"] == 0.0
    # rank 0 wrote one complete folder: same statistics (counts exactly), sets and predictions; no lock left
    a, b = NeuronStats.load(one / "stats.safetensors"), NeuronStats.load(two / "stats.safetensors")
    for n in ("K", "T", "n_clips"):
        assert torch.equal(getattr(a, n), getattr(b, n)), n
    for n in ("sum", "sumsq"):  # float32 activations of other batch compositions (each rank batches its shard)
        torch.testing.assert_close(getattr(a, n), getattr(b, n), rtol=1e-5, atol=1e-6)
    for f in (one / "neurons").glob("*.safetensors"):
        assert torch.equal(NeuronSet.load(f).masks, NeuronSet.load(two / "neurons" / f.name).masks)
    for stage in ("identification", "deactivation", "steering"):
        assert json.loads((two / "eval" / f"{stage}.json").read_text()) == json.loads(
            (one / "eval" / f"{stage}.json").read_text())
    # the set units' top activations: the ranks' shares merged by the top-k rule equal one process's
    pa, pb = (json.loads((d / "neuron_pages.json").read_text()) for d in (one, two))
    assert [u["id"] for u in pa["units"]] == [u["id"] for u in pb["units"]] and pa["units"]
    for ua, ub in zip(pa["units"], pb["units"]):
        assert [(e["clip"], e["position"]) for e in ua["top"]] == [(e["clip"], e["position"]) for e in ub["top"]]
        assert [e["value"] for e in ua["top"]] == pytest.approx([e["value"] for e in ub["top"]], abs=2e-4)
        assert ua["hist"]["counts"] == ub["hist"]["counts"]  # edges from the stats: equal to float32 rounding
        assert (ua["hist"]["lo"], ua["hist"]["width"]) == pytest.approx((ub["hist"]["lo"], ub["hist"]["width"]), rel=1e-4)
    assert not (two / ".esn_lens.lock").exists() and not list((two / "checkpoints").iterdir())
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
