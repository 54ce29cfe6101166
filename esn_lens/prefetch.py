"""Build model inputs ahead of the model: a bounded, order-preserving prefetch over background threads.

Audio decoding, resampling, feature extraction and tokenisation run on the CPU; with ``num_workers > 0`` the next
batches are built while the model runs the current one (at most ``num_workers + 1`` batches ahead, so memory stays
bounded). Results are identical to the serial path: the same function builds the same items, yielded in order, and an
error is raised when its item is reached.

The default depends on where the model runs (measured with ``benchmarks/bench_scale.py``): with the model on a GPU
the input building overlaps the forward, so threads build ahead; with the model on the CPU the thread competes with
the forward for the same cores and costs time and memory (discovery end to end vs the plain forward on a 2-core
machine: 1.132x with one worker vs 1.036x serial, peak RSS +254 vs +141 MiB; issue #17's run: 1.085x vs 1.011x),
so the default there is serial.

Example: ``for batch in prefetched(chunks, lambda c: lens.batch_clips(c, prompt), num_workers=2): ...``
"""
from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable, Iterator, TypeVar

from .errors import InputError

T = TypeVar("T")
R = TypeVar("R")


def default_workers(device: Any = None) -> int:
    """Input-building threads by default: none (serial) when the model runs on the CPU (``device`` of type
    ``"cpu"``); otherwise half this machine's cores, at most 4 (1 on 2 cores)."""
    if device is not None and torch_device_type(device) == "cpu":
        return 0
    return max(1, min(4, (os.cpu_count() or 2) // 2))


def torch_device_type(device: Any) -> str:
    """``"cpu"``, ``"cuda"``, ... of a torch device or its name (``"cuda:1"``)."""
    return getattr(device, "type", None) or str(device).split(":")[0]


def check_workers(num_workers: int | None, device: Any = None) -> int:
    """``num_workers`` validated (None: :func:`default_workers` for ``device``; 0: build serially in the loop)."""
    if num_workers is None:
        return default_workers(device)
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise InputError(f"num_workers must be an integer >= 0 (0 = no prefetching), got {num_workers!r}")
    return num_workers


def prefetched(items: Iterable[T], build: Callable[[T], R], num_workers: int | None = None, *,
               device: Any = None) -> Iterator[R]:
    """``build(item)`` for each item, in order; built up to ``num_workers + 1`` items ahead in background threads
    (``num_workers=None``: :func:`default_workers` for the model's ``device``)."""
    n = check_workers(num_workers, device)
    if n == 0:
        for item in items:
            yield build(item)
        return
    source = iter(items)
    with ThreadPoolExecutor(n, thread_name_prefix="esn-lens-prefetch") as pool:
        pending: deque = deque()

        def submit() -> None:
            for item in source:
                pending.append(pool.submit(build, item))
                return

        for _ in range(n + 1):
            submit()
        try:
            while pending:
                result = pending.popleft().result()
                submit()
                yield result
        finally:
            for fut in pending:
                fut.cancel()
