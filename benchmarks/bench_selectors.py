"""Benchmark: score + select every built-in selector at the 7B shape (5 x 28 x 18,944), 2 CPU threads.

Run: ``python benchmarks/bench_selectors.py``. Target: <= 0.5 s median total for all built-ins at r = 0.005.
Also compares the batched kernels with a plain Python loop reference on a small shape (5 x 4 x 512) and
checks that both choose exactly the same units.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import time

import torch

from esn_lens.selectors import SELECTORS, find_neurons
from esn_lens.stats import NeuronStats

EMOTIONS = ("neutral", "angry", "happy", "sad", "frustrated")


def random_stats(E: int, L: int, N: int, seed: int = 0) -> NeuronStats:
    """Stats with realistic-looking random counts and sums (no model needed)."""
    g = torch.Generator().manual_seed(seed)
    stats = NeuronStats(EMOTIONS[:E], n_layers=L, d_mlp=N, model_fingerprint="bench")
    T = torch.randint(20_000, 40_000, (E,), generator=g).to(torch.float64)
    rate = torch.rand(1, L, N, generator=g, dtype=torch.float64) * 0.6 + 0.2
    rate = (rate + 0.05 * torch.randn(E, L, N, generator=g, dtype=torch.float64)).clamp(0, 1)
    stats.T = T
    stats.K = torch.floor(rate * T[:, None, None])
    mu = torch.randn(E, L, N, generator=g, dtype=torch.float64) * 0.1
    stats.sum = mu * T[:, None, None]
    stats.sumsq = (mu * mu + torch.rand(E, L, N, generator=g, dtype=torch.float64) + 0.01) * T[:, None, None]
    return stats


# ------------------------------------------------------------------ plain Python loop reference
def loop_scores(stats: NeuronStats, name: str, seed: int = 0) -> list:
    """scores[e][l][n] computed one unit at a time (mirrors tests/test_selectors.py)."""
    E, L, N = stats.shape
    K, T, S, Q = stats.K.tolist(), stats.T.reshape(-1).tolist(), stats.sum.tolist(), stats.sumsq.tolist()
    if name == "random":
        r = torch.rand(stats.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).tolist()
        return r
    out = [[[0.0] * N for _ in range(L)] for _ in range(E)]
    Ttot = sum(T)
    for l in range(L):
        for n in range(N):
            P = [K[e][l][n] / T[e] for e in range(E)]
            top = max(range(E), key=lambda e: (P[e], -e))
            if name == "lap":
                for e in range(E):
                    out[e][l][n] = P[e]
            elif name == "mad":
                m = sum(P) / E
                for e in range(E):
                    out[e][l][n] = abs(P[e] - m)
            elif name == "conact":
                srt = sorted(P, reverse=True)
                for e in range(E):
                    out[e][l][n] = (srt[0] - srt[1]) if e == top else 0.0
            elif name == "lape":
                tot = sum(P)
                terms = [p / tot * math.log(p / tot) if p > 0 else 0.0 for p in P] if tot > 0 else []
                h = sum(round(t * 2**40) / 2**40 for t in terms) + 0.0
                for e in range(E):
                    out[e][l][n] = h if (tot > 0 and e == top) else -math.inf
            else:
                Stot = sum(S[e][l][n] for e in range(E))
                Qtot = sum(Q[e][l][n] for e in range(E))
                for e in range(E):
                    Tr = Ttot - T[e]
                    Sr, Qr, s, q = Stot - S[e][l][n], Qtot - Q[e][l][n], S[e][l][n], Q[e][l][n]
                    diff = s / T[e] - Sr / max(Tr, 1)
                    if name == "mean_diff":
                        out[e][l][n] = diff
                    else:
                        m2 = max(q - s * s / T[e], 0.0) + max(Qr - Sr * Sr / max(Tr, 1), 0.0)
                        out[e][l][n] = diff / math.sqrt(m2 / max(T[e] + Tr - 2, 1) + 1e-12)
    return out


def loop_select(scores: list, k: int) -> list[set]:
    """Per emotion: sort units by (-score, flat index), keep the first k finite ones."""
    chosen = []
    for rows in scores:
        flat = [(v, l * len(row) + n) for l, row in enumerate(rows) for n, v in enumerate(row)]
        flat.sort(key=lambda t: (-t[0], t[1]))
        chosen.append({i for v, i in flat[:k] if v != -math.inf})
    return chosen


CPU_TIMES: dict[str, float] = {}


def timings(fn, repeats: int, label: str | None = None) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls after a warm-up; the median process CPU time goes to CPU_TIMES."""
    fn()  # warm-up
    times, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    if label:
        CPU_TIMES[label] = statistics.median(cpu)
    return times


def median_time(fn, repeats: int) -> float:
    return statistics.median(timings(fn, repeats))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    r = 0.005
    builtins = ["lap", "lape", "mad", "conact", "random", "mean_diff", "cohens_d"]
    assert all(b in SELECTORS for b in builtins)

    E, L, N = 5, 28, 18_944
    stats = random_stats(E, L, N)
    print(f"score + select at the 7B shape {E} x {L} x {N:,} (r = {r}, {args.threads} threads, "
          f"median of {args.repeats})")
    per = {}
    for name in builtins:
        ts = timings(lambda: find_neurons(stats, name, top_frac=r), args.repeats, name)
        per[name] = statistics.median(ts)
        ns = find_neurons(stats, name, top_frac=r)
        print(f"  {name:<10} median {per[name] * 1e3:7.1f} ms  (min {min(ts) * 1e3:6.1f}, CPU {CPU_TIMES[name] * 1e3:6.1f})"
              f"   chosen/emotion: {min(ns.counts.values())}..{max(ns.counts.values())}")
    ts = timings(lambda: [find_neurons(stats, n, top_frac=r) for n in builtins], args.repeats, "total")
    total_all = statistics.median(ts)
    print(f"  {'TOTAL':<10} median {total_all * 1e3:7.1f} ms  (min {min(ts) * 1e3:6.1f}, CPU {CPU_TIMES['total'] * 1e3:6.1f}; "
          f"target <= 500 ms: {'OK' if total_all <= 0.5 else 'OVER'})")
    print(f"  (CPU = median process CPU time, all threads; with 1 thread it bounds the uncontended wall time. "
          f"Load average now: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores)")

    e, l, n = 5, 4, 512
    small = random_stats(e, l, n, seed=1)
    k = int(math.floor(r * l * n + 0.5))
    print(f"\nloop reference vs kernel at {e} x {l} x {n} (k = {k} per emotion)")
    loop_t = kern_t = 0.0
    for name in builtins:
        t0 = time.perf_counter()
        ref = loop_select(loop_scores(small, name), k)
        loop_t += time.perf_counter() - t0
        kern_t += median_time(lambda: find_neurons(small, name, top_frac=r), args.repeats)
        ns = find_neurons(small, name, top_frac=r)
        got = [set((ns.indices(em)[:, 0] * n + ns.indices(em)[:, 1]).tolist()) for em in ns.emotions]
        assert got == ref, f"{name}: kernel and loop reference choose different units"
    print(f"  loop {loop_t * 1e3:.1f} ms, kernel {kern_t * 1e3:.2f} ms, speed-up x{loop_t / kern_t:.0f} "
          f"(same units chosen by every selector)")
    print(f"\nSUMMARY: 7B shape total {total_all:.3f} s median ({'within' if total_all <= 0.5 else 'OVER'} the 0.5 s "
          f"target); kernel/loop speed-up x{loop_t / kern_t:.0f} at {e}x{l}x{n}")


if __name__ == "__main__":
    main()
