"""Shared helpers for the benchmarks: paired timing with medians and peak memory."""
from __future__ import annotations

import resource
import statistics
import time
from typing import Callable


def paired_ratio(fn_ref: Callable[[], object], fn_test: Callable[[], object], repeats: int = 15, warmup: int = 2):
    """Median of per-pair time ratios test/ref (alternating order), plus both medians in seconds."""
    for _ in range(warmup):
        fn_ref(), fn_test()
    ratios, tr, tt = [], [], []
    for i in range(repeats):
        order = [(fn_ref, tr), (fn_test, tt)] if i % 2 == 0 else [(fn_test, tt), (fn_ref, tr)]
        for fn, acc in order:
            t0 = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - t0)
        ratios.append(tt[-1] / tr[-1])
    return statistics.median(ratios), statistics.median(tr), statistics.median(tt)


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (Linux ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
