"""The run's view of ``torch.distributed``: one process, or data-parallel ranks under ``torchrun``.

Every rank holds the model and walks the same stages; statistics are collected on each rank's shard of a chunk
and summed (:func:`esn_lens.distributed.all_reduce_stats`), evaluations are run on each rank's shard and gathered
(:func:`esn_lens.distributed.evaluate_distributed`), so every rank holds the same results; rank 0 writes the run
folder. Without a process group (and no ``WORLD_SIZE`` > 1) everything is the single-process call.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Sequence, TypeVar


T_ = TypeVar("T_")


class Parallel:
    """Rank, world and the collectives a run uses (all no-ops for one process)."""

    def __init__(self, info: Any = None, owns_group: bool = False):
        self.info = info
        self.owns_group = owns_group

    @classmethod
    def from_env(cls) -> "Parallel":
        """Join (or start, from torchrun's environment) the process group; one process when there is none."""
        import torch.distributed as dist

        initialised = dist.is_available() and dist.is_initialized()
        if not initialised and int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1:
            return cls()
        from ..distributed import init_distributed

        info = init_distributed()
        return cls(info if info.distributed else None, owns_group=not initialised and info.distributed)

    @property
    def distributed(self) -> bool:
        return self.info is not None

    @property
    def main(self) -> bool:
        return self.info is None or self.info.is_main

    def device(self, configured: str | None) -> str | None:
        """This rank's device: the configured one, else its own GPU under torchrun with GPUs, else the default."""
        if configured is not None or not self.distributed or self.info.device.type == "cpu":
            return configured
        return str(self.info.device)

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def agree(self, fn: Callable[[], T_], what: str) -> T_:
        """``fn()`` on every rank; if any rank raised, every rank raises (see :func:`esn_lens.distributed.run_agreed`)."""
        if not self.distributed:
            return fn()
        from ..distributed import run_agreed

        return run_agreed(fn, what=what)

    def evaluate(self, evaluator, clips: Sequence, conditions: Sequence) -> dict:
        """:meth:`SEREvaluator.run` over ``clips``, split over the ranks and gathered in clip order."""
        if not self.distributed:
            return evaluator.run(clips, conditions)
        from ..distributed import evaluate_distributed

        return evaluate_distributed(evaluator, clips, conditions)

    def collect_stats(self, lens, clips: Sequence, prompts: Sequence[str], stats, *, batch_size: int,
                      num_workers: int | None) -> None:
        """Add ``clips`` (one prompt each) into ``stats``: in place for one process; on each rank's shard, summed
        over the ranks and added, under torchrun (identical ``stats`` on every rank)."""
        kw = dict(site=stats.site, positions=stats.positions, batch_size=batch_size, progress=False,
                  num_workers=num_workers)
        if not self.distributed:
            lens.collect_stats(list(clips), list(prompts), stats.emotions, stats=stats, **kw)
            return
        from ..distributed import all_reduce_stats, run_agreed, shard_indices

        local = lens.new_stats(stats.emotions, stats.site, stats.positions)
        mine = shard_indices(len(clips), self.info.rank, self.info.world_size)

        def work() -> None:
            if mine:
                lens.collect_stats([clips[i] for i in mine], [prompts[i] for i in mine], stats.emotions, stats=local,
                                   **kw)

        run_agreed(work, what="collect_stats")
        all_reduce_stats(local)
        stats.merge(local)

    def collect_attribution(self, lens, clips: Sequence, evaluator, att, *, batch_size: int) -> None:
        """Add AtP of ``clips`` into ``att``: in place for one process; on each rank's shard, summed over the ranks
        and added, under torchrun (identical ``att`` on every rank)."""
        from ..attribution import AttributionStats, collect_attribution

        kw = dict(evaluator=evaluator, site=att.site, positions=att.positions, batch_size=batch_size, progress=False)
        if not self.distributed:
            collect_attribution(lens, list(clips), att.emotions, att=att, **kw)
            return
        import torch
        import torch.distributed as dist

        from ..distributed import run_agreed, shard_indices

        local = AttributionStats(att.emotions, att.n_layers, att.d_mlp, site=att.site, positions=att.positions,
                                 model_fingerprint=att.model_fingerprint, adapter=att.adapter)
        mine = shard_indices(len(clips), self.info.rank, self.info.world_size)

        def work() -> None:
            if mine:
                collect_attribution(lens, [clips[i] for i in mine], att.emotions, att=local, **kw)

        run_agreed(work, what="collect_attribution")
        packed = torch.cat([local.sum.reshape(-1), local.n_clips])
        dist.all_reduce(packed)
        local.sum.copy_(packed[: local.sum.numel()].reshape(local.sum.shape))
        local.n_clips.copy_(packed[local.sum.numel():])
        att.merge(local)

    def close(self) -> None:
        """Leave the process group this run started (one it found is left to its owner)."""
        if self.owns_group:
            from ..distributed import finalize_distributed

            finalize_distributed()
            self.owns_group = False


__all__ = ["Parallel"]
