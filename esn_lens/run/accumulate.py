"""The one checkpointed accumulate loop every streaming statistics stage runs through (stats, attribution, ...).

A stage hands :func:`accumulate` an *accumulator* (the :class:`Accumulator` protocol) and the items to feed it;
the loop gives it chunks, checkpoints its ``state_dict`` between chunks, resumes from the last checkpoint, splits
each chunk over the ranks under ``torchrun`` and sums the ranks' shares, and writes the final file::

    class CountClips:                      # counts the pool's clips per emotion
        def __init__(self, emotions): self.emotions, self.n = list(emotions), torch.zeros(len(emotions))
        def add(self, clips):
            for c in clips: self.n[self.emotions.index(c.emotion)] += 1
        def merge(self, other): self.n += other.n
        def state_dict(self): return {"meta": {"emotions": self.emotions}, "n": self.n.clone()}
        def load_state_dict(self, sd): self.n.copy_(sd["n"])
        def empty(self): return CountClips(self.emotions)

    @register_stage("clip_counts", needs=["split", "pool_ids"], produces=["clip_counts"], after="stats")
    def clip_counts(run):
        by_id = {c.utterance_id: c for c in run.split.identification}
        run.clip_counts = run.accumulate(CountClips(run.split.emotions), [by_id[i] for i in run.pool_ids],
                                         file="clip_counts.safetensors")
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

from ..io import load_tensors, save_tensors


@runtime_checkable
class Accumulator(Protocol):
    """A mergeable running statistic over items (clips).

    ``add(items)`` adds a chunk; ``merge(other)`` adds another accumulator's counts (the result equals one pass over
    both); ``state_dict()`` returns tensors (summable over ranks) plus an optional JSON-able ``"meta"``;
    ``load_state_dict(sd)`` restores it; ``empty()`` returns a zero accumulator of the same shape (a rank's share).
    Optionally ``all_reduce()`` sums it over the ranks in place (default: every tensor of ``state_dict`` summed).
    """

    def add(self, items: Sequence[Any]) -> None: ...

    def merge(self, other: Any) -> Any: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> Any: ...

    def empty(self) -> Any: ...


def save_state(path: Path, acc: Accumulator, kind: str, **extra: Any) -> None:
    """Write ``acc.state_dict()`` (tensors + ``meta`` under ``"stats"``) and ``extra`` to a safetensors file."""
    sd = acc.state_dict()
    save_tensors(path, {k: v for k, v in sd.items() if k != "meta"}, kind, {"stats": sd.get("meta"), **extra})


def load_state(path: Path, kind: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The state dict and the extra metadata of a file :func:`save_state` wrote."""
    tensors, meta = load_tensors(path, kind)
    return {"meta": meta.get("stats"), **tensors}, meta


def accumulate(run: Any, acc: Accumulator, items: Sequence[Any], *, file: str, kind: str | None = None,
               desc: str | None = None, write: Callable[[Path, Accumulator], None] | None = None,
               read: Callable[[Path], dict[str, Any]] | None = None) -> Accumulator:
    """Feed ``items`` to ``acc`` through the run folder's checkpointed loop for the current stage; return ``acc``.

    ``run``: the stage's context (``run.stage.name`` names the stage). ``file``: the stage's output in the run
    folder (also the checkpoint's name under ``checkpoints/``); ``kind``: the file kind (default ``<stage>_state``).
    ``write(path, acc)`` / ``read(path) -> state dict`` give the output a format of its own (default: the state
    dict, refused if written by another model). A done stage re-reads its output; a killed one resumes from its last
    checkpoint (refused if it belongs to another model or configuration) with a result identical to one pass.
    """
    stage = run.stage.name
    f, cfg, fp = run.folder, run.cfg, run.lens.fingerprint
    kind = kind or f"{stage}_state"
    out = f.path(file)

    def read_out(path: Path) -> dict[str, Any]:
        sd, meta = load_state(path, kind)
        f.check_checkpoint(path, meta.get("model_fingerprint") == fp, f" (model {meta.get('model_fingerprint')!r})")
        return sd

    if f.done(stage):
        acc.load_state_dict((read or read_out)(out))
        return acc

    def load(ckpt: Path) -> tuple[int, float]:
        sd, meta = load_state(ckpt, kind)
        f.check_checkpoint(ckpt, meta.get("key") == f.key and meta.get("model_fingerprint") == fp,
                           f" (model {meta.get('model_fingerprint')!r}, this model {fp!r})")
        acc.load_state_dict(sd)
        return int(meta["consumed"]), float(meta.get("elapsed", 0.0))

    def save(ckpt: Path, consumed: int, elapsed: float) -> None:
        save_state(ckpt, acc, kind, consumed=consumed, elapsed=elapsed, key=f.key, model_fingerprint=fp)

    secs = f.stream(stage, items, cfg.batch_size * cfg.checkpoint_every, work=lambda chunk: run.par.accumulate(acc, chunk),
                    save=save, load=load, checkpoint=file, desc=desc or stage, progress=cfg.progress)
    if f.main:
        if write is not None:
            write(out, acc)
        else:
            save_state(out, acc, kind, model_fingerprint=fp)
    f.mark(stage, secs)
    f.drop_checkpoint(file)
    return acc


__all__ = ["Accumulator", "accumulate", "save_state", "load_state"]
