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

    def accumulate(self, acc, items: Sequence) -> None:
        """Add ``items`` into the accumulator ``acc`` (see :class:`esn_lens.run.Accumulator`): in place for one
        process; under torchrun each rank adds its shard into ``acc.empty()``, the shares are summed over the ranks
        (``acc.all_reduce()`` when it has one, else every tensor of its state dict) and merged into ``acc``, so
        every rank holds the same result."""
        if not self.distributed:
            acc.add(list(items))
            return
        from ..distributed import run_agreed, shard_indices

        local = acc.empty()
        mine = shard_indices(len(items), self.info.rank, self.info.world_size)

        def work() -> None:
            if mine:
                local.add([items[i] for i in mine])

        run_agreed(work, what=f"{type(acc).__name__}.add")
        reduce = getattr(local, "all_reduce", None)
        if reduce is not None:
            reduce()
        else:
            sum_state(local)
        acc.merge(local)

    def close(self) -> None:
        """Leave the process group this run started (one it found is left to its owner)."""
        if self.owns_group:
            from ..distributed import finalize_distributed

            finalize_distributed()
            self.owns_group = False


def sum_state(acc) -> None:
    """Sum every tensor of ``acc.state_dict()`` over the ranks (one float64 all-reduce) and load the sums back."""
    import torch
    import torch.distributed as dist

    from ..distributed import _comm_device

    sd = acc.state_dict()
    names = [k for k, v in sd.items() if isinstance(v, torch.Tensor)]
    flat = torch.cat([sd[k].detach().reshape(-1).to(_comm_device(None), torch.float64) for k in names])
    dist.all_reduce(flat)
    offset = 0
    for k in names:
        t = sd[k]
        sd[k] = flat[offset:offset + t.numel()].reshape(t.shape).to(device=t.device, dtype=t.dtype)
        offset += t.numel()
    acc.load_state_dict(sd)


__all__ = ["Parallel", "sum_state"]
