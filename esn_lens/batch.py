"""What one traced run takes and gives: a :class:`Batch` of model inputs with its position masks, the one-call
form's :class:`TraceOutput`, probe records and the reusable audio-encoder cache."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from .vocab import PositionMasks
from .errors import InputError


@dataclass
class Batch:
    """Model inputs of a batch plus its position masks, (optionally) the clips' labels, and the identity of the
    processor that built it (:func:`processor_identity`; a trace refuses a batch of another processor)."""

    inputs: dict[str, Tensor]
    masks: PositionMasks
    labels: list[str] | None = None
    clip_ids: list[str] | None = None
    processor_id: str | None = None

    @property
    def size(self) -> int:
        return int(self.masks.padding.shape[0])

    def tile(self, n: int) -> "Batch":
        """``n`` copies of the batch stacked row-major (copy c holds rows c*size ... c*size+size-1)."""
        cat = lambda t: torch.cat([t] * n, dim=0)  # noqa: E731
        m = self.masks
        return Batch({k: cat(v) for k, v in self.inputs.items()},
                     PositionMasks(cat(m.padding), cat(m.special), cat(m.audio), cat(m.prompt_text), m.prompt_known),
                     None if self.labels is None else self.labels * n,
                     None if self.clip_ids is None else self.clip_ids * n, self.processor_id)


@dataclass
class Scope:
    """The rows of a trace's combined batch that one library operation acts on, and their padded batch.

    Inside ``tracer.invoke(batch)`` the scope is that invoke's rows; ``batch`` is the invoke's batch padded to the
    combined length (its masks are what positions refer to). Outside a trace (a plain forward) it is the whole batch.
    """

    start: int
    batch: "Batch | None"  # the invoke's batch, padded to the combined length (None: unknown)

    @property
    def size(self) -> int:
        return 0 if self.batch is None else self.batch.size

    def rows(self, value: Tensor) -> Tensor:
        """This scope's rows of a combined-batch value (a view)."""
        if self.batch is None or (self.start == 0 and value.shape[0] == self.size):
            return value
        return value[self.start:self.start + self.size]

    def need_batch(self, what: str) -> "Batch":
        """The scope's padded batch, or an :class:`InputError` saying how to give it."""
        if self.batch is None:
            raise InputError(f"{what} needs the batch (its position masks): pass batch=..., or open the trace with an "
                             "esn_lens Batch (lens.trace(lens.batch_clips(...)))")
        return self.batch


@dataclass
class TraceOutput:
    """What one traced run returns: last-position logits or all logits, the cache, generated ids."""

    logits: Float[Tensor, "batch *pos vocab"] | None
    cache: dict[str, Tensor] = field(default_factory=dict)
    sequences: Int[Tensor, "batch seq"] | None = None
    audio: Any = None


@dataclass
class ProbeRecord:
    """A site's pooled value recorded by :meth:`Lens.probe`; ``value`` is filled when the trace runs."""

    site: str
    pooling: str
    value: Tensor | None = None


@dataclass
class AudioCache:
    """The audio encoder's output for a batch of ``rows`` clips, reusable for tiled copies of that batch."""

    output: Any
    rows: int
    kind: str = "tower"  # "tower": the audio encoder's output; "embeds": the decoder's input embeddings

    def tiled(self, rows: int) -> Any:
        """The output for ``rows`` = k * self.rows rows (k row-major copies; packed outputs concatenate the same way)."""
        if rows % self.rows:
            raise InputError(f"audio cache is for {self.rows} clips; a batch of {rows} rows is not a tiling of it")
        k = rows // self.rows
        return _map_tensors(self.output, lambda t: torch.cat([t] * k, dim=0) if k > 1 else t)


def _map_tensors(obj: Any, fn: Callable[[Tensor], Tensor]) -> Any:
    if isinstance(obj, Tensor):
        return fn(obj)
    if hasattr(obj, "items") and hasattr(obj, "__setitem__"):
        new = copy.copy(obj)
        for k, v in obj.items():
            new[k] = _map_tensors(v, fn)
        return new
    if isinstance(obj, tuple):
        return type(obj)(_map_tensors(v, fn) for v in obj)
    return obj


def fit_audio_window(audios: list, ids: Sequence[str], adapter: Any, rate: int, long_audio: str) -> list:
    """Clips cut to the model's audio window (``adapter.max_audio_seconds``) as ``long_audio`` says: "warn" (cut, with
    a warning naming the clips), "truncate" (cut silently: a stated choice) or "error" (refuse)."""
    if long_audio not in ("warn", "truncate", "error"):
        raise InputError(f"long_audio must be 'warn', 'truncate' or 'error', got {long_audio!r}")
    window = adapter.max_audio_seconds
    if window is None:
        return audios
    n = int(window * rate)
    long = [f"clip {cid} ({a.size / rate:.1f} s)" for a, cid in zip(audios, ids) if a.size > n]
    if long and long_audio == "error":
        raise InputError(f"{', '.join(long)}: longer than {adapter.name}'s {window:g} s audio window; cut the "
                         "clips into windows, or pass long_audio='truncate'")
    if long and long_audio == "warn":
        import warnings

        warnings.warn(f"{', '.join(long)}: longer than {adapter.name}'s {window:g} s audio window; only the "
                      f"first {window:g} s are heard (long_audio='truncate' cuts without this warning, 'error' "
                      "refuses)", stacklevel=4)
    return [a[:n] for a in audios]


def check_context(inputs: dict, ids: Sequence[str], config: Any) -> None:
    """Refuse rows longer than the model's positions (``max_position_embeddings`` of its text config): a prompt of
    100,000 tokens for a model trained to 4,096 would run (slowly) on positions it never saw."""
    text_cfg = config.get_text_config() if hasattr(config, "get_text_config") else config
    limit = getattr(text_cfg, "max_position_embeddings", None)
    ids_t = inputs.get("input_ids")
    if not isinstance(limit, int) or ids_t is None or ids_t.shape[-1] <= limit:
        return
    mask = inputs.get("attention_mask")
    lengths = (mask.sum(-1) if mask is not None else torch.full((ids_t.shape[0],), ids_t.shape[-1])).tolist()
    over = [f"clip {cid} ({int(k):,} tokens)" for cid, k in zip(ids, lengths) if k > limit]
    raise InputError(f"{', '.join(over[:3])}: longer than the model's {limit:,} positions (max_position_embeddings); "
                     "shorten the prompt or the audio")


def processor_identity(processor: Any) -> str | None:
    """A short hash of what a processor makes of its input: the tokenizer's vocabulary and special tokens, and the
    feature extractor's scalar settings (sampling rate, frame sizes, ...). Equal for a model and its fine-tuned copy
    (same processor), different for another model family's. None without a processor.
    Example: ``processor_identity(lens.processor) == batch.processor_id``."""
    import hashlib
    import json

    if processor is None:
        return None
    tok = getattr(processor, "tokenizer", processor)
    parts: dict[str, Any] = {}
    get_vocab = getattr(tok, "get_vocab", None)
    if callable(get_vocab):
        parts["vocab"] = sorted(get_vocab().items())
    parts["special"] = sorted(map(str, getattr(tok, "all_special_tokens", []) or []))
    fe = getattr(processor, "feature_extractor", None)
    if fe is not None:
        d = fe.to_dict() if hasattr(fe, "to_dict") else dict(vars(fe))
        parts["features"] = sorted((k, v) for k, v in d.items()
                                   if isinstance(v, (int, float, str, bool)) and k != "processor_class")
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


def check_processor(batch: Batch, processor_id: str | None) -> Batch:
    """``batch`` if it was built by the processor ``processor_id`` names (or either is unknown), else one line."""
    if batch.processor_id is not None and processor_id is not None and batch.processor_id != processor_id:
        raise InputError(f"batch: built by another processor (id {batch.processor_id}) than this model's "
                         f"({processor_id}: tokenizer or feature extractor differ); build it with this model's "
                         "lens.batch(...) / lens.batch_clips(...)")
    return batch
