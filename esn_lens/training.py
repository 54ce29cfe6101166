"""The training-loop pieces the demo models' training scripts share (``scripts/train_*.py``).

A warm-up + cosine learning-rate schedule and seeded epoch-wise shuffled batches: the shipped demo model and the
real-decoder demo are trained with exactly these, so their runs are reproducible from the seed.
"""
from __future__ import annotations

import math
import random
from typing import Iterator

import torch


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 0 at step ``total`` (step it once a batch).

    Example: ``sched = warmup_cosine(opt, warmup=40, total=384)``.
    """
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))


def shuffled_batches(n_items: int, batch_size: int, total_steps: int, seed: int) -> Iterator[list[int]]:
    """Item indices of ``total_steps`` batches: each epoch is a fresh seeded shuffle of ``range(n_items)`` cut
    into batches of ``batch_size`` (the last one of an epoch may be smaller); stops mid-epoch at ``total_steps``.

    Example: ``for idx in shuffled_batches(len(data), 8, 384, seed=0): items = [data[i] for i in idx]``.
    """
    if n_items < 1 or batch_size < 1:
        raise ValueError(f"shuffled_batches: need n_items >= 1 and batch_size >= 1, got {n_items}, {batch_size}")
    rng = random.Random(seed)
    step = 0
    while step < total_steps:
        order = list(range(n_items))
        rng.shuffle(order)
        for s in range(0, n_items, batch_size):
            if step >= total_steps:
                return
            yield order[s:s + batch_size]
            step += 1
