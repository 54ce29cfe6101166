"""Where the recording trace's time goes: the PyTorch profiler over a plain forward and over ``lens.run`` with
statistics (the bench_stats model: 4 decoder layers, hidden 256, MLP 1024; batch 8 x ~259 tokens).

    python benchmarks/profile_trace.py [--repeats 10]

Prints the ops whose self CPU time grows most from plain to traced, per forward and per decoder layer, and the
total added time split into the statistics kernel (bmm/sum/sign/...) and the rest (nnsight trace, hooks, Python).
"""
from __future__ import annotations

import argparse
import os
import sys
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.dirname(__file__))
from bench_stats import workload  # noqa: E402

KERNEL_OPS = ("aten::bmm", "aten::sum", "aten::sign", "aten::clamp_", "aten::mul", "aten::to", "aten::_to_copy",
              "aten::copy_", "aten::add_", "aten::transpose", "aten::one_hot")


def self_times(fn, repeats: int) -> tuple[dict[str, float], float]:
    for _ in range(2):
        fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(repeats):
            fn()
    per_op: dict[str, float] = defaultdict(float)
    for ev in prof.key_averages():
        per_op[ev.key] += ev.self_cpu_time_total / repeats / 1000.0  # ms per forward
    return per_op, sum(per_op.values())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(1)
    lens, _, variants, _ = workload()
    plain, traced = variants["plain"], variants["esn_lens"]

    p_ops, p_tot = self_times(plain, args.repeats)
    t_ops, t_tot = self_times(traced, args.repeats)
    diff = {k: t_ops.get(k, 0.0) - p_ops.get(k, 0.0) for k in set(p_ops) | set(t_ops)}
    L = lens.n_layers
    print(f"profiled self CPU per forward: plain {p_tot:.1f} ms, traced with stats {t_tot:.1f} ms "
          f"(+{t_tot - p_tot:.1f} ms, x{t_tot / p_tot:.3f}); {L} decoder layers")
    print(f"{'op':<32} {'added ms/forward':>17} {'per layer':>10}")
    for k, v in sorted(diff.items(), key=lambda kv: -kv[1])[:12]:
        print(f"{k:<32} {v:17.3f} {v / L:10.3f}")
    kern = sum(v for k, v in diff.items() if k in KERNEL_OPS)
    print(f"statistics kernel ops: +{kern:.2f} ms ({kern / L:.3f} ms per layer); everything else: "
          f"+{t_tot - p_tot - kern:.2f} ms")


if __name__ == "__main__":
    main()
