"""The training-loop pieces the demo models' training scripts share (``scripts/train_*.py``).

A warm-up + cosine learning-rate schedule, seeded epoch-wise shuffled batches, and the cut-feature examples and
their collation: the shipped demo model and the real-decoder demo are trained with exactly these, so their runs are
reproducible from the seed.
"""
from __future__ import annotations

import math
import random
from typing import Any, Iterator, Sequence

import torch
from torch import Tensor


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


def cut_feature_examples(lens: Any, clips: Sequence[Any], prompts: Sequence[str], labels: Sequence[int], *,
                         pad_frames: int = 4, feature_dtype: torch.dtype = torch.float32,
                         batch_size: int = 32) -> list[dict[str, Any]]:
    """Per clip, what the training forward needs: prompt token ids (no padding), log-mel features cut
    ``pad_frames`` after the valid frames (the adapter's ``encode_cut_features`` input), valid frame count, label.

    Example: ``data = cut_feature_examples(lens, clips, [demo_prompt(c.utterance_id) for c in clips], ys)``.
    """
    if not len(clips) == len(prompts) == len(labels):
        raise ValueError(f"cut_feature_examples: {len(clips)} clips, {len(prompts)} prompts, {len(labels)} labels")
    data = []
    for s in range(0, len(clips), batch_size):
        chunk = clips[s:s + batch_size]
        b = lens.batch([c.load(16000)[0] for c in chunk], list(prompts[s:s + batch_size]), sampling_rate=16000)
        ids, am = b.inputs["input_ids"], b.inputs["attention_mask"].bool()
        feats, fam = b.inputs["input_features"], b.inputs["feature_attention_mask"]
        for i in range(len(chunk)):
            n = int(fam[i].sum())
            keep = min(feats.shape[-1], n + pad_frames)
            data.append(dict(ids=ids[i][am[i]].clone(), feats=feats[i, :, :keep].to(feature_dtype).clone(), flen=n,
                             y=labels[s + i]))
    return data


def collate_cut_features(items: Sequence[dict[str, Any]], pad_id: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Batch :func:`cut_feature_examples` items: left-padded ids and attention mask (as ``Lens.batch`` pads),
    features padded to an even frame count with each clip's last (log-mel floor) frame, frame counts, labels."""
    S = max(len(it["ids"]) for it in items)
    Fm = max(it["feats"].shape[-1] for it in items)
    Fm += Fm % 2
    ids = torch.full((len(items), S), pad_id, dtype=torch.long)
    am = torch.zeros(len(items), S, dtype=torch.long)
    feats = torch.empty(len(items), items[0]["feats"].shape[0], Fm)
    for i, it in enumerate(items):
        n = len(it["ids"])
        ids[i, S - n:] = it["ids"]
        am[i, S - n:] = 1
        f = it["feats"].float()
        feats[i, :, :f.shape[-1]] = f
        feats[i, :, f.shape[-1]:] = f[:, -1:]
    return ids, am, feats, torch.tensor([it["flen"] for it in items]), torch.tensor([it["y"] for it in items])
