"""nnsight tracing of the wrapped model: batching several invokes, the Lens tracer, and the torch hooks through
which the library's operations act inside a trace (see :mod:`esn_lens.sites` for the named sites).

Library operations (edits, statistics, probes) attach torch hooks to the site modules for the trace's duration, so
they compose with the user's own nnsight code in the same trace. At a site, a hook sees the value after the user's
nnsight edits of that site (nnsight hands a module's output to the trace body before torch's forward hooks run).
A library operation must be called before the model reaches its sites (an error says so otherwise).
"""
from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import torch
from nnsight import NNsight
from nnsight.intervention.tracer import InterleavingTracer
from torch import Tensor

from .errors import InputError

from .sites import Site, _rewrap, _unwrap

if TYPE_CHECKING:  # pragma: no cover
    from .batch import Batch
    from .lens import Lens


# ---------------------------------------------------------------------- batching several invokes
def pad_to(t: Tensor, length: int, dim: int, value: float | int, left: bool) -> Tensor:
    """``t`` padded with ``value`` along ``dim`` to ``length`` (on the left or the right)."""
    n = t.shape[dim]
    if n == length:
        return t
    shape = list(t.shape)
    shape[dim] = length - n
    fill = torch.full(shape, value, dtype=t.dtype, device=t.device)
    return torch.cat([fill, t] if left else [t, fill], dim=dim)


def _right_padded(batch: "Batch") -> bool:
    pad = batch.masks.padding
    return bool(pad[:, -1].any()) and not bool(pad[:, 0].any())


def merge_batches(batches: list["Batch"], pad_token_id: int) -> tuple["Batch", list["Batch"]]:
    """One batch holding every row of ``batches`` (sequences padded to the longest, on the side they were
    padded; audio features padded with zeros after their end), and each batch re-padded to that length."""
    from .vocab import PositionMasks
    from .batch import Batch

    left = not any(_right_padded(b) for b in batches)
    P = max(b.inputs["input_ids"].shape[1] for b in batches)
    padded = []
    for b in batches:
        inputs = {}
        for k, v in b.inputs.items():
            if not isinstance(v, Tensor):
                inputs[k] = v
            elif k == "input_ids":
                inputs[k] = pad_to(v, P, 1, pad_token_id, left)
            elif k == "attention_mask" or (v.ndim == 2 and v.shape[1] == b.inputs["input_ids"].shape[1]):
                inputs[k] = pad_to(v, P, 1, 0, left)
            else:
                inputs[k] = v
        m = b.masks
        masks = PositionMasks(pad_to(m.padding, P, 1, True, left), pad_to(m.special, P, 1, False, left),
                              pad_to(m.audio, P, 1, False, left), pad_to(m.prompt_text, P, 1, False, left),
                              m.prompt_known)
        padded.append(Batch(inputs, masks, b.labels, b.clip_ids))
    merged_inputs: dict[str, Any] = {}
    for k in padded[0].inputs:
        vals = [p.inputs.get(k) for p in padded]
        if any(v is None for v in vals):
            raise InputError(f"tracer.invoke: batches differ in their model inputs ({k!r} is missing from some)")
        if not isinstance(vals[0], Tensor):
            merged_inputs[k] = vals[0]
            continue
        # audio features of different lengths: pad every trailing dim with zeros after the end
        shape = [max(v.shape[d] for v in vals) for d in range(vals[0].ndim)]
        fixed = []
        for v in vals:
            for d in range(1, v.ndim):
                v = pad_to(v, shape[d], d, 0, False)
            fixed.append(v)
        merged_inputs[k] = torch.cat(fixed, dim=0)
    cat = lambda name: torch.cat([getattr(p.masks, name) for p in padded], dim=0)  # noqa: E731
    masks = PositionMasks(cat("padding"), cat("special"), cat("audio"), cat("prompt_text"),
                          all(p.masks.prompt_known for p in padded))
    labels = None if any(p.labels is None for p in padded) else [x for p in padded for x in p.labels]
    ids = None if any(p.clip_ids is None for p in padded) else [x for p in padded for x in p.clip_ids]
    return Batch(merged_inputs, masks, labels, ids), padded


class LensNNsight(NNsight):
    """nnsight's wrapper of the adapter's root module whose inputs are esn_lens :class:`~esn_lens.lens.Batch` es.

    ``trace(batch)`` and ``tracer.invoke(batch)`` take batches (or a dict of model inputs); several invokes are
    merged into one forward by :func:`merge_batches`, and each invoke's interventions see its own rows.
    """

    def __init__(self, module: torch.nn.Module, lens: "Lens"):
        super().__init__(module)
        object.__setattr__(self, "_lens_ref", weakref.ref(lens))

    def _batch_size(self, *inputs: Any, **kwargs: Any) -> int:
        from .batch import Batch

        for x in inputs:
            if isinstance(x, Batch):
                return x.size
            if isinstance(x, dict):
                t = x.get("input_ids", x.get("inputs_embeds"))
                return int(t.shape[0]) if isinstance(t, Tensor) else 1
        t = kwargs.get("input_ids", kwargs.get("inputs_embeds"))
        return int(t.shape[0]) if isinstance(t, Tensor) else 0

    def _batch(self, invokes: list[tuple], fn: Any) -> tuple:
        from .batch import Batch

        lens = self._lens_ref()
        extra: dict[str, Any] = {}
        items = []
        for args, kwargs in invokes:
            data = [a for a in args if isinstance(a, (Batch, dict))]
            if len(data) != 1 or len(args) != 1:
                raise InputError("lens.trace / tracer.invoke take one esn_lens Batch (lens.batch_clips(...)) "
                                 "or one dict of model inputs")
            items.append(data[0])
            extra.update(kwargs)
        if len(items) == 1:
            item = items[0]
            lens._layout = [(0, item, item)] if isinstance(item, Batch) else []
            inputs = item.inputs if isinstance(item, Batch) else dict(item)
        else:
            if not all(isinstance(i, Batch) for i in items):
                raise InputError("several invokes need esn_lens Batches (to pad them to one length)")
            merged, padded = merge_batches(items, lens._pad_token_id())
            starts = [0]
            for b in items[:-1]:
                starts.append(starts[-1] + b.size)
            lens._layout = list(zip(starts, items, padded))
            inputs = merged.inputs
        args, kw = lens.adapter.call_args(inputs)
        return args, {**kw, **extra}


class LensTracer(InterleavingTracer):
    """nnsight's tracer, plus: an optional inference mode, and removal of the torch hooks that library
    operations attach during the trace (whatever way it ends)."""

    inference: bool = False
    lens: Any = None

    def execute(self, code) -> None:
        lens = self.lens
        ctx = torch.inference_mode() if self.inference else contextlib.nullcontext()
        lens._hooks.append([])
        try:
            with ctx:
                super().execute(code)
        finally:
            for h in lens._hooks.pop():
                h.remove()
            lens._layout = []


# ---------------------------------------------------------------------- hooks for library operations
def current_rows(lens: "Lens") -> tuple[int, "Batch | None"]:
    """``(first row, padded batch)`` of the invoke whose code is running now (``(0, None)`` if unknown)."""
    from nnsight.intervention.interleaver import Mediator

    try:
        group = Mediator.current("esn_lens").batch_group
    except Exception:  # noqa: BLE001 - outside a worker
        group = None
    layout = lens._layout
    if group is None or len(layout) <= 1:
        return 0, (layout[0][2] if layout else None)
    for start, _orig, padded in layout:
        if start == group[0]:
            return start, padded
    return 0, None


def _already_ran(lens: "Lens", key: str) -> bool:
    """Whether the module at ``key`` already ran in the trace whose code is running (nnsight keeps running counts);
    False outside a trace's worker (a plain forward with hooks, as :meth:`Lens.run` uses)."""
    from nnsight.intervention.interleaver import Mediator

    try:
        start = Mediator.current("esn_lens").counts_at_start.get(key, 0)
    except Exception:  # noqa: BLE001 - not inside a worker
        return False
    return lens.nn.interleaver.counts.get(key, 0) > start


def attach_hook(lens: "Lens", site: Site, fn: Callable[[Tensor], Tensor | None]) -> None:
    """Call ``fn(value)`` on a site's value at every call of its module during the active trace.

    ``fn`` edits the value in place and returns None, or returns a replacement. Removed when the trace ends.
    """
    if not lens._hooks:
        raise InputError("library operations that act inside a trace must be called inside `with lens.trace(...)`")
    mod, side = site.envoy._module, site.side
    key = f"{site.envoy.path}.{'input' if side == 'input' else 'output'}"
    if _already_ran(lens, key):
        raise InputError(f"{site.name}: the model already ran past this site in this trace, so a library operation "
                         "can no longer act on it; call library operations (edit.apply, stats.record, lens.probe) "
                         "before reading sites that come later in the forward pass")
    if side != "input":
        def out_hook(_m, _args, out):
            new = fn(_unwrap(out, side))
            return None if new is None else _rewrap(out, side, new)
        handle = mod.register_forward_hook(out_hook)
    else:
        def in_hook(_m, args, kwargs):
            if args:
                new = fn(args[0])
                return None if new is None else ((new, *args[1:]), kwargs)
            key = next(iter(kwargs))
            new = fn(kwargs[key])
            return None if new is None else (args, {**kwargs, key: new})
        handle = mod.register_forward_pre_hook(in_hook, with_kwargs=True)
    lens._hooks[-1].append(handle)


@dataclass
class Scope:
    """The rows of the combined batch that a library operation acts on, and their position masks."""

    start: int
    batch: "Batch"  # the invoke's batch, padded to the combined length

    @property
    def size(self) -> int:
        return self.batch.size

    def rows(self, value: Tensor) -> Tensor:
        """This scope's rows of a combined-batch value (a view)."""
        return value if (self.start == 0 and value.shape[0] == self.size) else value[self.start:self.start + self.size]


def scope_of(lens: "Lens", batch: "Batch | None") -> Scope:
    """The scope of the invoke whose code is running (or of ``batch``, given explicitly)."""
    start, padded = current_rows(lens)
    if batch is not None:
        for s, orig, pb in lens._layout:
            if orig is batch:
                return Scope(s, pb)
        return Scope(start, batch)
    if padded is None:
        raise InputError("this operation needs the batch (its position masks): pass batch=..., or open the trace "
                         "with an esn_lens Batch (lens.trace(lens.batch_clips(...)))")
    return Scope(start, padded)


def record_probe(lens: "Lens", st: Site, pooling: Any, batch: "Batch | None" = None) -> Any:
    """:meth:`Lens.probe`: a hook recording ``st`` pooled over positions into a :class:`~esn_lens.batch.ProbeRecord`."""
    from .batch import ProbeRecord

    sc = scope_of(lens, batch)
    m = sc.batch.masks
    if isinstance(pooling, Tensor):
        weights = pooling.to(torch.bool)
        if tuple(weights.shape) != tuple(m.padding.shape):
            raise InputError(f"probe: pooling mask has shape {tuple(weights.shape)}, the batch is {tuple(m.padding.shape)}")
    elif pooling in ("last", "mean_audio", "mean", "none"):
        weights = {"last": m.last_token, "mean_audio": lambda: m.select("audio"), "mean": lambda: m.valid,
                   "none": lambda: None}[pooling]()
    else:
        raise InputError(f"probe: unknown pooling {pooling!r}; expected last, mean_audio, mean, none or a mask")
    rec = ProbeRecord(st.name, pooling if isinstance(pooling, str) else "mask")

    def fn(value: Tensor) -> None:
        if rec.value is not None:  # prefill only (generation calls the module again per token)
            return None
        v = sc.rows(value).detach().float()
        if weights is None:
            rec.value = v.cpu()
        else:
            w = weights.to(v.device, torch.float32)
            rec.value = (torch.einsum("bp,bpd->bd", w, v) / w.sum(1, keepdim=True).clamp(min=1)).cpu()
        return None

    attach_hook(lens, st, fn)
    return rec


@contextlib.contextmanager
def hook_session(lens: "Lens", batch: "Batch"):
    """Library operations' hooks for one plain forward (what a trace gives them, without nnsight's tracer)."""
    lens._hooks.append([])
    lens._layout = [(0, batch, batch)]
    try:
        yield
    finally:
        for h in lens._hooks.pop():
            h.remove()
        lens._layout = []
