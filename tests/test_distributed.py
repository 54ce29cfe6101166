"""Data-parallel discovery and evaluation: two real gloo processes (torchrun) on a tiny real model.

The distributed run must equal one process: firing counts K, token counts T and clip counts exactly,
value sums to 1e-9; evaluation predictions (constrained and generated) identical, in the original order.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from esn_lens.distributed import (DistributedError, all_reduce_stats, collect_stats_distributed, dist_info,
                                  evaluate_distributed, gather_predictions, gather_results, run_agreed, shard,
                                  shard_indices)
from esn_lens.errors import ESNLensError, InputError
from esn_lens.stats import NeuronStats

#: Shared by the workers and the single-process reference (exec'd in both): model, clips, conditions.
SHARED = textwrap.dedent('''
    import numpy as np
    import torch
    from esn_lens.data.clip import EmotionClip
    from esn_lens.interventions import Condition, deactivate, steer
    from esn_lens.testing import build_tiny, tiny_audio

    EMOTIONS = ("angry", "happy", "sad")
    PROMPT = "Which emotion?"

    def make_clips(n=7):
        return [EmotionClip(f"c{i}", EMOTIONS[(i * 2) % 3],
                            audio=tiny_audio(0.3 + 0.1 * (i % 4), freq=150.0 + 40 * i, seed=i), sampling_rate=16000)
                for i in range(n)]

    def make_conditions(lens):
        units = torch.zeros(lens.n_layers, lens.d_mlp, dtype=torch.bool)
        units[0, ::2] = True
        units[1, 1::3] = True
        return [Condition("baseline", []), Condition("mask", [deactivate(units)]),
                Condition("steer", [steer(units, alpha=4.0)])]
''')

WORKER = SHARED + textwrap.dedent('''
    import json, sys, traceback
    torch.set_num_threads(1)
    from esn_lens.distributed import (init_distributed, collect_stats_distributed, evaluate_distributed,
                                      all_reduce_stats, finalize_distributed)
    from esn_lens.evaluate import SEREvaluator
    from esn_lens.lens import Lens

    out = sys.argv[1]
    info = init_distributed(timeout_s=120)
    model, proc = build_tiny("qwen2_audio", seed=0)
    lens = Lens(model, proc)
    clips = make_clips()
    stats = collect_stats_distributed(lens, clips, PROMPT, EMOTIONS, batch_size=1, progress=False)
    stats.save(f"{out}/stats_{info.rank}.safetensors")
    conds = make_conditions(lens)
    res = evaluate_distributed(SEREvaluator(lens, EMOTIONS, batch_size=1), clips, conds)
    gen = evaluate_distributed(SEREvaluator(lens, EMOTIONS, mode="generate", max_new_tokens=3, batch_size=1),
                               clips, conds[:2])
    record = {"rank": info.rank, "world": info.world_size, "backend": info.backend,
              "constrained": {k: [r.labels, r.predictions] for k, r in res.items()},
              "generate": {k: [r.labels, r.predictions, r.answers] for k, r in gen.items()}}

    def outcome(fn):
        try:
            fn()
            return None
        except Exception as e:
            return [type(e).__name__, [c.__name__ for c in type(e).__mro__], str(e)]

    bad = make_clips()
    bad[3] = EmotionClip("c3-nan", bad[3].emotion, audio=np.full(4000, np.nan, np.float32), sampling_rate=16000)
    record["rank_failure"] = outcome(lambda: collect_stats_distributed(lens, bad, PROMPT, EMOTIONS, progress=False))
    other = lens.new_stats(EMOTIONS if info.rank == 0 else EMOTIONS[:2])
    record["mismatch"] = outcome(lambda: all_reduce_stats(other))
    with open(f"{out}/rank_{info.rank}.json", "w") as f:
        json.dump(record, f)
    finalize_distributed()
''')


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """Run the worker under ``torchrun --nproc_per_node 2`` (gloo, loopback) once; return its output folder."""
    d = tmp_path_factory.mktemp("dist")
    script = d / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--nnodes", "1",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), str(script), str(d)]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=d)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"torchrun did not finish in 300 s:\n{(e.stderr or '')[-3000:]}")
    if proc.returncode != 0:
        pytest.fail(f"torchrun failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return d, [json.loads((d / f"rank_{r}.json").read_text()) for r in range(2)]


@pytest.fixture(scope="module")
def reference():
    """The same model, clips and conditions in this single process (no process group)."""
    from esn_lens.evaluate import SEREvaluator
    from esn_lens.lens import Lens

    ns: dict = {}
    exec(SHARED, ns)
    model, proc = ns["build_tiny"]("qwen2_audio", seed=0)
    lens = Lens(model, proc)
    clips = ns["make_clips"]()
    stats = lens.collect_stats(clips, ns["PROMPT"], ns["EMOTIONS"], batch_size=1, progress=False)
    conds = ns["make_conditions"](lens)
    res = SEREvaluator(lens, ns["EMOTIONS"], batch_size=1).run(clips, conds)
    gen = SEREvaluator(lens, ns["EMOTIONS"], mode="generate", max_new_tokens=3, batch_size=1).run(clips, conds[:2])
    return dict(ns=ns, lens=lens, clips=clips, stats=stats, res=res, gen=gen)


# ---------------------------------------------------------------------- two real processes
def test_two_ranks_ran_with_gloo(two_ranks):
    _, recs = two_ranks
    assert [r["rank"] for r in recs] == [0, 1]
    assert all(r["world"] == 2 and r["backend"] == "gloo" for r in recs)


def test_distributed_stats_equal_single_process(two_ranks, reference):
    d, _ = two_ranks
    ref: NeuronStats = reference["stats"]
    for rank in range(2):
        got = NeuronStats.load(d / f"stats_{rank}.safetensors", expect_fingerprint=reference["lens"].fingerprint)
        assert got.emotions == ref.emotions
        assert torch.equal(got.K, ref.K), "firing counts must be exact"
        assert torch.equal(got.T, ref.T) and torch.equal(got.n_clips, ref.n_clips)
        assert int(got.n_clips.sum()) == len(reference["clips"])
        torch.testing.assert_close(got.sum, ref.sum, rtol=0, atol=1e-9)
        torch.testing.assert_close(got.sumsq, ref.sumsq, rtol=0, atol=1e-9)


def test_distributed_constrained_predictions_equal_single_process(two_ranks, reference):
    _, recs = two_ranks
    for rec in recs:
        assert set(rec["constrained"]) == set(reference["res"])
        for name, r in reference["res"].items():
            labels, preds = rec["constrained"][name]
            assert labels == r.labels
            assert preds == r.predictions, name


def test_distributed_generated_answers_equal_single_process(two_ranks, reference):
    _, recs = two_ranks
    for rec in recs:
        for name, r in reference["gen"].items():
            labels, preds, answers = rec["generate"][name]
            assert (labels, preds, answers) == (r.labels, r.predictions, r.answers), name


def test_failure_on_one_rank_is_raised_on_every_rank(two_ranks):
    _, recs = two_ranks
    bad_rank = 3 % 2  # clip 3 (NaN audio) lies in rank 1's shard
    for rec in recs:
        name, mro, msg = rec["rank_failure"]
        assert "ESNLensError" in mro
        if rec["rank"] == bad_rank:
            assert name == "InputError" and "c3-nan" in msg and "NaN" in msg
        else:
            assert name == "DistributedError" and "rank 1" in msg and "c3-nan" in msg


def test_incompatible_stats_refused_on_every_rank(two_ranks):
    _, recs = two_ranks
    for rec in recs:
        name, mro, msg = rec["mismatch"]
        assert name == "IncompatibleError" and "emotions" in msg and "rank 1" in msg


# ---------------------------------------------------------------------- sharding
@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 200), world=st.integers(1, 9))
def test_shards_partition_balanced_deterministic(n, world):
    parts = [shard_indices(n, r, world) for r in range(world)]
    flat = sorted(i for p in parts for i in p)
    assert flat == list(range(n))
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    assert parts == [shard_indices(n, r, world) for r in range(world)]
    assert all(p == sorted(p) for p in parts)


def test_shard_items_and_bad_arguments():
    assert shard(list("abcde"), 1, 2) == ["b", "d"]
    assert shard([], 0, 3) == []
    assert shard(list("ab"), 2, 3) == []
    for args in [(5, 2, 2), (5, -1, 2), (5, 0, 0), (-1, 0, 1)]:
        with pytest.raises(InputError):
            shard_indices(*args)


# ---------------------------------------------------------------------- one process: plain fallbacks
def test_single_process_fallbacks_are_identity(reference):
    assert not torch.distributed.is_initialized()
    info = dist_info()
    assert (info.rank, info.world_size, info.distributed) == (0, 1, False)
    s = NeuronStats(("a", "b"), 1, 3)
    s.K += 1
    assert all_reduce_stats(s) is s and torch.equal(s.K, torch.ones(2, 1, 3, dtype=torch.float64))
    assert gather_predictions(["x", "y"], [1, 0]) == ["y", "x"]
    with pytest.raises(DistributedError, match="index"):
        gather_predictions(["x", "y"], [0, 0])
    with pytest.raises(DistributedError, match="no rank sent"):
        gather_predictions(["x"], [0], n_total=2)
    res = reference["res"]
    back = gather_results({k: r for k, r in res.items()}, list(range(len(reference["clips"]))))
    assert {k: r.predictions for k, r in back.items()} == {k: r.predictions for k, r in res.items()}
    with pytest.raises(ValueError, match="boom"):
        run_agreed(lambda: (_ for _ in ()).throw(ValueError("boom")))


def test_single_process_collect_and_evaluate_match_plain_calls(reference):
    from esn_lens.evaluate import SEREvaluator

    ns, lens, clips = reference["ns"], reference["lens"], reference["clips"]
    got = collect_stats_distributed(lens, clips, ns["PROMPT"], ns["EMOTIONS"], batch_size=1, progress=False)
    assert torch.equal(got.K, reference["stats"].K) and torch.equal(got.sum, reference["stats"].sum)
    res = evaluate_distributed(SEREvaluator(lens, ns["EMOTIONS"], batch_size=1), clips)
    assert res["baseline"].predictions == reference["res"]["baseline"].predictions
    # an existing stats object is added into, not overwritten
    again = collect_stats_distributed(lens, clips[:2], ns["PROMPT"], ns["EMOTIONS"], batch_size=1, progress=False,
                                      stats=got)
    assert again is got and int(got.n_clips.sum()) == len(clips) + 2


def test_distributed_entry_points_refuse_empty_and_unknown_labels(reference):
    from esn_lens.data.clip import EmotionClip
    from esn_lens.evaluate import SEREvaluator

    ns, lens = reference["ns"], reference["lens"]
    with pytest.raises(InputError, match="no clips"):
        collect_stats_distributed(lens, [], ns["PROMPT"], ns["EMOTIONS"])
    with pytest.raises(InputError, match="no clips"):
        evaluate_distributed(SEREvaluator(lens, ns["EMOTIONS"]), [])
    odd = [EmotionClip("x1", "bored", audio=ns["tiny_audio"](0.3), sampling_rate=16000)]
    with pytest.raises(ESNLensError, match="bored"):
        collect_stats_distributed(lens, odd, ns["PROMPT"], ns["EMOTIONS"], progress=False)
    with pytest.raises(ESNLensError, match="bored"):
        evaluate_distributed(SEREvaluator(lens, ns["EMOTIONS"]), odd)


# ---------------------------------------------------------------------- large-model loading path
@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory):
    from esn_lens.testing import build_tiny

    d = tmp_path_factory.mktemp("tiny_ckpt")
    model, proc = build_tiny("qwen2_audio", seed=0)
    model.save_pretrained(d)
    proc.save_pretrained(d)
    return d, model, proc


def _clips_for_loading():
    ns: dict = {}
    exec(SHARED, ns)
    return ns, ns["make_clips"](4)


def test_from_pretrained_bfloat16_records_finite_float64_stats(saved_tiny):
    from esn_lens.lens import Lens

    d, model, proc = saved_tiny
    lens = Lens.from_pretrained(str(d), dtype="bfloat16")
    assert next(lens.model.parameters()).dtype == torch.bfloat16
    assert lens.fingerprint == Lens(model, proc).fingerprint  # same weights, any dtype
    ns, clips = _clips_for_loading()
    s = lens.collect_stats(clips, ns["PROMPT"], ns["EMOTIONS"], batch_size=2, progress=False)
    assert s.K.dtype == torch.float64 and s.K.device == next(lens.model.parameters()).device
    for name in ("K", "T", "sum", "sumsq"):
        assert torch.isfinite(getattr(s, name)).all(), name
    assert s.T.sum() > 0 and s.K.sum() > 0
    # bf16 values are close to the fp32 model's: firing rates agree to a few percent
    ref = Lens(model, proc).collect_stats(clips, ns["PROMPT"], ns["EMOTIONS"], batch_size=2, progress=False)
    assert torch.equal(s.T, ref.T)
    assert (s.firing_rate - ref.firing_rate).abs().mean() < 0.05


def test_from_pretrained_device_map_auto_matches(saved_tiny):
    pytest.importorskip("accelerate")
    from esn_lens.lens import Lens

    d, _, _ = saved_tiny
    ns, clips = _clips_for_loading()
    auto = Lens.from_pretrained(str(d), dtype="bfloat16", device_map="auto")
    plain = Lens.from_pretrained(str(d), dtype="bfloat16")
    a = auto.collect_stats(clips, ns["PROMPT"], ns["EMOTIONS"], batch_size=2, progress=False)
    b = plain.collect_stats(clips, ns["PROMPT"], ns["EMOTIONS"], batch_size=2, progress=False)
    assert torch.equal(a.K, b.K) and torch.equal(a.sum, b.sum)


def test_unknown_dtype_is_refused(saved_tiny):
    from esn_lens.lens import Lens

    d, _, _ = saved_tiny
    with pytest.raises(InputError, match="unknown dtype 'bf15'"):
        Lens.from_pretrained(str(d), dtype="bf15")
