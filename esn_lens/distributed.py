"""Data-parallel discovery and evaluation on ``torch.distributed`` (launch with ``torchrun``).

Every rank holds a full copy of the model and sees the full clip list; each processes its own shard.
Statistics are sums, so summing K, T, sum, sumsq and n_clips over ranks (float64, one collective)
gives exactly what one process would have accumulated. Evaluation predictions are gathered back into
the original clip order. Works with ``gloo`` (CPU) and ``nccl`` (GPUs); without a process group (no
``torchrun``) every function falls back to a single process, so the same script runs either way.

Example (``torchrun --nproc_per_node 8 discover.py``)::

    from esn_lens.distributed import init_distributed, collect_stats_distributed, evaluate_distributed

    info = init_distributed()                              # from torchrun's env; gloo or nccl
    lens = Lens.from_pretrained(path, dtype="bfloat16", device=str(info.device))
    stats = collect_stats_distributed(lens, clips, prompt, emotions)   # identical on every rank
    if info.is_main:
        stats.save("stats.safetensors")
    results = evaluate_distributed(SEREvaluator(lens, emotions), test_clips, conditions)

A failure on one rank (a bad clip, say) is raised on every rank -- the original exception on the rank
where it happened, :class:`DistributedError` naming that rank elsewhere -- instead of leaving the
others waiting in a collective until the timeout.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Sequence, TypeVar

import torch
import torch.distributed as dist

from .errors import ESNLensError, IncompatibleError, InputError
from .stats import NeuronStats

T_ = TypeVar("T_")
_STAT_FIELDS = ("K", "sum", "sumsq", "T", "n_clips")


class DistributedError(ESNLensError, RuntimeError):
    """Another rank failed, or the ranks disagree (shards, condition names, statistics' shapes)."""


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: rank, world size, local rank, backend (None = no process group), device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """True on rank 0 (the rank that should write files and print)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.backend is not None and self.world_size > 1


def _env_int(name: str, default: int) -> int:
    v = os.environ.get(name)
    if v is None or v == "":
        return default
    try:
        return int(v)
    except ValueError:
        raise InputError(f"environment variable {name}={v!r} is not an integer") from None


def _local_device(local_rank: int) -> torch.device:
    """This rank's GPU (``cuda:LOCAL_RANK``) when there are GPUs, else the CPU: where to put its model copy."""
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def dist_info(group: Any = None) -> DistInfo:
    """The current process group's view (a world of one when none is initialised)."""
    local = _env_int("LOCAL_RANK", 0)
    if not (dist.is_available() and dist.is_initialized()):
        return DistInfo(0, 1, local, None, _local_device(local))
    backend = str(dist.get_backend(group))
    return DistInfo(dist.get_rank(group), dist.get_world_size(group), local, backend, _local_device(local))


def init_distributed(backend: str | None = None, *, timeout_s: float | None = None) -> DistInfo:
    """Initialise the default process group from ``torchrun``'s environment if needed, and return :class:`DistInfo`.

    - Already initialised: returns the current state (``backend`` is ignored).
    - No ``WORLD_SIZE`` (or 1) in the environment: a single process, nothing initialised.
    - Otherwise ``backend`` defaults to ``"nccl"`` when CUDA is available (the local rank's GPU is made
      current) and ``"gloo"`` on CPU.
    """
    if not dist.is_available():
        return DistInfo()
    if dist.is_initialized():
        return dist_info()
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return dist_info()
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
    if missing:
        raise InputError(f"WORLD_SIZE={world} but {missing} not set: launch with torchrun, or call "
                         "torch.distributed.init_process_group yourself")
    local = _env_int("LOCAL_RANK", 0)
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        if not torch.cuda.is_available():
            raise InputError("backend 'nccl' needs CUDA GPUs; use backend='gloo' on CPU")
        torch.cuda.set_device(local % torch.cuda.device_count())
    kw: dict[str, Any] = {}
    if timeout_s is not None:
        kw["timeout"] = timedelta(seconds=float(timeout_s))
    dist.init_process_group(backend=backend, **kw)
    return dist_info()


def finalize_distributed() -> None:
    """Destroy the default process group if one is initialised (call once at the end of a script, on every rank).

    Every rank first waits at a barrier, so no rank tears its gloo connections down while a peer still uses them
    (a rank that exits first can make the other abort with "terminate called without an active exception")."""
    if dist.is_available() and dist.is_initialized():
        if dist.get_world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()


def _active(group: Any = None) -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1


# ---------------------------------------------------------------------- sharding
def shard_indices(n: int, rank: int, world_size: int) -> list[int]:
    """Indices ``rank, rank + world_size, ...`` of ``n`` items: a deterministic, balanced partition.

    Every index belongs to exactly one rank; shard sizes differ by at most one; clips sorted by emotion or
    duration are spread evenly. Example: ``shard_indices(5, 1, 2) == [1, 3]``.
    """
    for name, v in (("n", n), ("rank", rank), ("world_size", world_size)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise InputError(f"shard: {name} must be an integer, got {v!r}")
    if world_size < 1:
        raise InputError(f"shard: world_size must be >= 1, got {world_size}")
    if not 0 <= rank < world_size:
        raise InputError(f"shard: rank {rank} out of range 0..{world_size - 1}")
    if n < 0:
        raise InputError(f"shard: n must be >= 0, got {n}")
    return list(range(rank, n, world_size))


def shard(items: Sequence[T_], rank: int | None = None, world_size: int | None = None) -> list[T_]:
    """This rank's share of ``items`` (see :func:`shard_indices`); rank/world default to the process group's.

    Example: ``shard(clips, 0, 2)`` = clips 0, 2, 4, ...
    """
    items = list(items)
    if rank is None or world_size is None:
        info = dist_info()
        rank = info.rank if rank is None else rank
        world_size = info.world_size if world_size is None else world_size
    return [items[i] for i in shard_indices(len(items), rank, world_size)]


# ---------------------------------------------------------------------- agreement
def _gather_objects(obj: Any, group: Any = None) -> list[Any]:
    if not _active(group):
        return [obj]
    out: list[Any] = [None] * dist.get_world_size(group)
    dist.all_gather_object(out, obj, group=group)
    return out


def run_agreed(fn: Callable[[], T_], *, what: str = "work", group: Any = None) -> T_:
    """Run ``fn`` on every rank, then agree: if any rank raised, every rank raises.

    The failing rank re-raises its own exception; the others raise :class:`DistributedError` naming the
    rank(s) and message(s). Without a process group this is just ``fn()``.
    """
    err: BaseException | None = None
    result: Any = None
    try:
        result = fn()
    except Exception as e:  # noqa: BLE001 -- reported to every rank, then re-raised
        err = e
    if not _active(group):
        if err is not None:
            raise err
        return result
    me = dist.get_rank(group)
    msgs = _gather_objects(None if err is None else f"{type(err).__name__}: {err}", group)
    if err is not None:
        raise err
    failed = [(r, m) for r, m in enumerate(msgs) if m is not None]
    if failed:
        detail = "; ".join(f"rank {r}: {m}" for r, m in failed)
        raise DistributedError(f"{what} failed on {len(failed)} rank(s) (this is rank {me}): {detail}")
    return result


# ---------------------------------------------------------------------- statistics
def _comm_device(group: Any = None) -> torch.device:
    """Where a tensor must live for the group's backend: the current GPU for NCCL, else the CPU."""
    backend = str(dist.get_backend(group)).lower()
    if "nccl" in backend and not any(b in backend for b in ("gloo", "mpi", "ucc")):
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_stats(stats: NeuronStats, group: Any = None) -> NeuronStats:
    """Sum ``stats`` (K, T, sum, sumsq, n_clips) over all ranks, in place, and return it.

    One float64 all-reduce of the packed tensors, on the device the backend needs (the current GPU for
    NCCL, the CPU for gloo); the result is copied back to the stats' own device. The result equals a
    single process's statistics (counts exactly; value sums up to float64 rounding). Every rank must
    pass statistics of the same units: a mismatch raises :class:`IncompatibleError` on every rank
    (naming the rank and field) before any tensor is exchanged. Without a process group: a no-op.
    """
    if not isinstance(stats, NeuronStats):
        raise InputError(f"all_reduce_stats expects NeuronStats, got {type(stats).__name__}")
    if not _active(group):
        return stats
    fields = stats.tensor_names()
    meta = {**stats._meta(), "shapes": [tuple(getattr(stats, f).shape) for f in fields]}
    metas = _gather_objects(meta, group)
    for r, m in enumerate(metas):
        diff = [k for k in meta if m.get(k) != metas[0].get(k)]
        if diff:
            k = diff[0]
            raise IncompatibleError(f"all_reduce_stats: rank {r} has stats with {k}={m.get(k)!r}, rank 0 has "
                                    f"{metas[0].get(k)!r}; every rank must record the same units")
    dev = _comm_device(group)
    tensors = [getattr(stats, f) for f in fields]
    flat = torch.cat([t.detach().reshape(-1).to(device=dev, dtype=torch.float64) for t in tensors])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
    offset = 0
    for t in tensors:
        n = t.numel()
        t.copy_(flat[offset:offset + n].view(t.shape).to(t.device))
        offset += n
    return stats


def collect_stats_distributed(lens, clips: Sequence, prompt: str, emotions: Sequence[str], *, site: str = "act",
                              positions: str = "valid", batch_size: int = 8, stats: NeuronStats | None = None,
                              progress: bool = True, edits: Sequence = (), backend: str | None = None,
                              group: Any = None) -> NeuronStats:
    """:meth:`Lens.collect_stats` over this rank's shard of ``clips``, then summed over ranks.

    Initialises the process group from the environment if needed (``torchrun``); with one process it is
    exactly ``lens.collect_stats``. Every rank must pass the same ``clips`` (same order) and model; all
    labels are checked on every rank before any work. Returns the merged statistics on every rank (added
    into ``stats`` if given). Progress is shown on rank 0 only.
    """
    info = init_distributed(backend)
    clips = list(clips)
    if not clips:
        raise InputError("collect_stats_distributed: no clips given")
    local_stats = lens.new_stats(stats.emotions if stats is not None else emotions,
                                 stats.site if stats is not None else site,
                                 stats.positions if stats is not None else positions)
    local_stats.emotion_index([c.emotion for c in clips])  # same check on every rank: fail together, early
    mine = shard(clips, info.rank, info.world_size)

    def work() -> None:
        if mine:
            lens.collect_stats(mine, prompt, local_stats.emotions, site=local_stats.site,
                               positions=local_stats.positions, batch_size=batch_size, stats=local_stats,
                               progress=progress and info.is_main, edits=edits)

    run_agreed(work, what="collect_stats_distributed", group=group)
    all_reduce_stats(local_stats, group)
    if stats is None:
        return local_stats
    return stats.merge(local_stats)


# ---------------------------------------------------------------------- evaluation
def gather_predictions(local: Sequence[T_], indices: Sequence[int], n_total: int | None = None,
                       group: Any = None) -> list[T_]:
    """Gather every rank's per-clip values (``local[i]`` belongs to clip ``indices[i]``) into original order.

    Uses ``all_gather_object`` (any picklable values); every rank gets the full list. Raises
    :class:`DistributedError` unless the ranks' indices cover ``0..n_total-1`` exactly once
    (``n_total`` defaults to the number of gathered values).
    """
    local, indices = list(local), [int(i) for i in indices]
    if len(local) != len(indices):
        raise InputError(f"gather_predictions: {len(local)} values for {len(indices)} indices")
    parts = _gather_objects((indices, local), group)
    total = sum(len(ix) for ix, _ in parts) if n_total is None else int(n_total)
    out: list[Any] = [None] * total
    seen = [False] * total
    for r, (ix, vals) in enumerate(parts):
        for i, v in zip(ix, vals):
            if not 0 <= i < total or seen[i]:
                raise DistributedError(f"gather_predictions: rank {r} sent index {i}, which is out of range "
                                       f"0..{total - 1} or already taken by another rank")
            out[i], seen[i] = v, True
    if not all(seen):
        missing = [i for i, s in enumerate(seen) if not s]
        raise DistributedError(f"gather_predictions: no rank sent clip index(es) {missing[:10]} of {total}")
    return out


def gather_results(local: dict, indices: Sequence[int], n_total: int | None = None, group: Any = None) -> dict:
    """Gather per-rank :class:`~esn_lens.evaluate.SERResult` dicts (condition -> result) into full results.

    Each rank passes the results of its shard and the shard's original clip indices; every rank gets
    results over all clips in the original order, identical to a single-process run.
    """
    from .evaluate import SERResult

    names = list(local)
    all_names = _gather_objects(names, group)
    if any(n != names for n in all_names):
        raise DistributedError(f"gather_results: ranks evaluated different conditions: {all_names}")
    rows = [tuple((local[n].labels[i], local[n].predictions[i], (local[n].answers or [""] * len(local[n].labels))[i])
                  for n in names) for i in range(len(indices))]
    full = gather_predictions(rows, indices, n_total, group)
    out = {}
    for k, n in enumerate(names):
        emotions = local[n].emotions
        out[n] = SERResult(n, emotions, [r[k][0] for r in full], [r[k][1] for r in full], [r[k][2] for r in full],
                           local[n].spec)
    return out


def evaluate_distributed(evaluator, clips: Sequence, conditions: Sequence | None = None, *, progress: bool = False,
                         backend: str | None = None, group: Any = None) -> dict:
    """:meth:`SEREvaluator.run` over this rank's shard, gathered into full results on every rank.

    With one process it is exactly ``evaluator.run(clips, conditions)``.
    """
    from .interventions import Condition

    info = init_distributed(backend)
    clips = list(clips)
    if not clips:
        raise InputError("evaluate_distributed: no clips given")
    conditions = list(conditions) if conditions else [Condition.baseline()]
    bad = sorted({c.emotion for c in clips} - set(evaluator.emotions))
    if bad:  # checked on every rank before any work, so all ranks fail together
        raise InputError(f"clips have emotion label(s) {bad} outside the evaluated set {list(evaluator.emotions)}")
    idx = shard_indices(len(clips), info.rank, info.world_size)

    def work() -> dict:
        if not idx:
            from .evaluate import SERResult

            return {c.name: SERResult(c.name, evaluator.emotions, [], [], [], c) for c in conditions}
        return evaluator.run([clips[i] for i in idx], conditions, progress=progress and info.is_main)

    local = run_agreed(work, what="evaluate_distributed", group=group)
    if not info.distributed:
        return local
    return gather_results(local, idx, len(clips), group)


__all__ = [
    "DistInfo", "DistributedError", "init_distributed", "finalize_distributed", "dist_info", "shard",
    "shard_indices", "run_agreed", "all_reduce_stats", "collect_stats_distributed", "gather_predictions",
    "gather_results", "evaluate_distributed",
]
