"""Streaming statistics over a corpus: the batch loop behind :meth:`esn_lens.lens.Lens.collect_stats` (batches
built ahead by :mod:`esn_lens.prefetch`, one :meth:`Lens.run` per batch recording into one :class:`NeuronStats`,
resumable from ``start`` with a per-batch callback)."""
from __future__ import annotations

from typing import Any, Callable, Sequence

from .errors import InputError
from .inputs import prompts_per_clip
from .stats import NeuronStats


def collect_stats(lens: Any, clips: Sequence[Any], prompt: str | Sequence[str], emotions: Sequence[str], *,
                  site: str = "act", positions: str = "valid", batch_size: int = 8, stats: NeuronStats | None = None,
                  progress: bool = True, edits: Sequence[Any] = (), start: int = 0,
                  on_batch: Callable[[int, NeuronStats], None] | None = None,
                  num_workers: int | None = None) -> NeuronStats:
    """See :meth:`esn_lens.lens.Lens.collect_stats` (the same arguments, with the lens first)."""
    from .prefetch import prefetched
    from tqdm.auto import tqdm

    stats = stats or lens.new_stats(emotions, site, positions)
    clips = list(clips)
    prompts = prompts_per_clip(prompt, len(clips), "collect_stats")
    if not 0 <= start <= len(clips):
        raise InputError(f"collect_stats: start={start} outside 0..{len(clips)}")
    idx_all = stats.emotion_index([c.emotion for c in clips])
    bar = tqdm(total=len(clips), initial=start, desc="collect stats", unit="clip", disable=not progress)
    firsts = list(range(start, len(clips), batch_size))
    build = lambda first: lens.batch_clips(clips[first:first + batch_size], prompts[first:first + batch_size])  # noqa: E731
    for first, b in zip(firsts, prefetched(firsts, build, num_workers, device=lens.adapter.device)):
        n = b.size
        lens.run(b, stats=stats, emotion_index=idx_all[first:first + n], logits="none", edits=edits)
        bar.update(n)
        if on_batch is not None:
            on_batch(first + n, stats)
    bar.close()
    return stats
