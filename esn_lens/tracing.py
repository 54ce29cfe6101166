"""nnsight tracing of the wrapped model: batching several invokes, the Lens tracer, and the :class:`TraceState` each
trace owns (see :mod:`esn_lens.sites` for the named sites).

Library operations (edits, statistics, probes, caches) *produce* hooks -- ``(site, fn)`` pairs -- and the trace
attaches them as torch hooks for its duration (:meth:`TraceState.attach`), so they compose with the user's own nnsight
code in the same forward. At a site, a hook sees the value after the user's nnsight edits of that site (nnsight hands a
module's input/output to the trace body before torch's hooks run).

The one ordering rule: a library operation acts on a site only if the model has not yet entered the site's module in
this trace. The trace knows which modules it entered (nnsight's per-location counts, plus the location the running
invoke is being served at), so an operation called after the body read its site, or any later one, is refused with one
line naming the site -- never silently dropped.
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Callable, Iterable

import torch
from nnsight import NNsight
from nnsight.intervention.interleaver import OutOfOrderError
from nnsight.intervention.tracer import InterleavingTracer
from torch import Tensor

from .batch import Batch, Scope, check_processor
from .errors import InputError, TraceOrderError
from .sites import MissingSite, Site, _rewrap, _unwrap, is_input_side
from .vocab import PositionMasks

if TYPE_CHECKING:  # pragma: no cover
    from .adapters import Adapter

#: what a library operation produces: a site and the function called with its value (edit in place and return None,
#: or return a replacement)
Hook = tuple[Site, Callable[[Tensor], "Tensor | None"]]


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


def _right_padded(batch: Batch) -> bool:
    pad = batch.masks.padding
    return bool(pad[:, -1].any()) and not bool(pad[:, 0].any())


def pad_batches(batches: list[Batch], pad_token_id: int) -> list[Batch]:
    """Each batch re-padded to the longest (on the side it was padded), as several invokes of one trace see it."""
    left = not any(_right_padded(b) for b in batches)
    P = max(b.inputs["input_ids"].shape[1] for b in batches)
    padded = []
    for b in batches:
        inputs = {}
        n = b.inputs["input_ids"].shape[1]
        for k, v in b.inputs.items():
            if not isinstance(v, Tensor):
                inputs[k] = v
            elif k == "input_ids":
                inputs[k] = pad_to(v, P, 1, pad_token_id, left)
            elif k == "attention_mask" or (v.ndim == 2 and v.shape[1] == n):
                inputs[k] = pad_to(v, P, 1, 0, left)
            else:
                inputs[k] = v
        m = b.masks
        masks = PositionMasks(pad_to(m.padding, P, 1, True, left), pad_to(m.special, P, 1, False, left),
                              pad_to(m.audio, P, 1, False, left), pad_to(m.prompt_text, P, 1, False, left),
                              m.prompt_known)
        padded.append(Batch(inputs, masks, b.labels, b.clip_ids, b.processor_id))
    return padded


def merge_batches(batches: list[Batch], pad_token_id: int) -> tuple[Batch, list[Batch]]:
    """One batch holding every row of ``batches`` (sequences padded to the longest, on the side they were
    padded; audio features padded with zeros after their end), and each batch re-padded to that length."""
    padded = pad_batches(batches, pad_token_id)
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
    return Batch(merged_inputs, masks, labels, ids, padded[0].processor_id), padded


def pad_token_id_of(tokenizer: Any) -> int:
    """The id sequences are padded with: the tokenizer's pad token, else its end-of-sequence token, else 0."""
    pid = getattr(tokenizer, "pad_token_id", None)
    return int(pid) if pid is not None else int(getattr(tokenizer, "eos_token_id", 0) or 0)


# ---------------------------------------------------------------------- the state one trace owns
class TraceState:
    """What one trace (or one plain forward of :meth:`Lens.run`) owns: the torch hook handles its library operations
    attached, the invoke layout (first row, batch, padded batch per invoke), the padding id, and -- through nnsight's
    interleaver -- which site modules the model has already entered."""

    def __init__(self, pad_token_id: int, interleaver: Any = None, processor_id: str | None = None,
                 site_names: dict[str, str] | None = None):
        self.pad_token_id, self.interleaver, self.processor_id = pad_token_id, interleaver, processor_id
        self.site_names = site_names or {}  # nnsight location ("model.model.layers.0.mlp.act_fn.output") -> site name
        self.layout: list[tuple[int, Batch, Batch]] = []
        self.handles: list[Any] = []

    # -------------------------------------------------------------- invokes
    def set_invokes(self, items: list[Any]) -> dict[str, Any]:
        """Record the invoke layout for ``items`` (Batches or dicts of model inputs); return the combined inputs."""
        for i in items:
            if isinstance(i, Batch):
                check_processor(i, self.processor_id)
        if len(items) == 1:
            item = items[0]
            self.layout = [(0, item, item)] if isinstance(item, Batch) else []
            return item.inputs if isinstance(item, Batch) else dict(item)
        if not all(isinstance(i, Batch) for i in items):
            raise InputError("several invokes need esn_lens Batches (to pad them to one length)")
        merged, padded = merge_batches(items, self.pad_token_id)
        starts = [0]
        for b in items[:-1]:
            starts.append(starts[-1] + b.size)
        self.layout = list(zip(starts, items, padded))
        return merged.inputs

    def scope(self, batch: Batch | None = None) -> Scope:
        """The scope of the invoke whose code is running now (or of ``batch``, one of the trace's invokes or a batch
        given explicitly)."""
        if batch is not None:
            for s, orig, pb in self.layout:
                if orig is batch:
                    return Scope(s, pb)
        group = self._worker_group()
        if group is None or len(self.layout) <= 1:
            here = Scope(0, self.layout[0][2] if self.layout else None)
        else:
            here = next((Scope(s, pb) for s, _o, pb in self.layout if s == group[0]), Scope(0, None))
        return here if batch is None else Scope(here.start, batch)

    @staticmethod
    def _worker() -> Any:
        from nnsight.intervention.interleaver import Mediator

        try:
            return Mediator.current("esn_lens")
        except Exception:  # noqa: BLE001 - outside a worker (a plain forward, or the trace body collecting invokes)
            return None

    def _worker_group(self) -> Any:
        w = self._worker()
        return None if w is None else w.batch_group

    # -------------------------------------------------------------- which sites were passed
    def reached(self, site: Site) -> bool:
        """Whether the model already entered ``site``'s module in this trace (so a hook there would come too late).

        Counts nnsight's visits of the module's input since the running invoke started, plus the location that invoke
        is being served at right now (reading a module's input or output means the forward is inside that module).
        """
        if self.interleaver is None or site.envoy is None:
            return False
        w = self._worker()
        if w is None:
            return False
        key = f"{site.envoy.path}.input"
        if self.interleaver.counts.get(key, 0) > w.counts_at_start.get(key, 0):
            return True
        pending = getattr(w, "pending", None)
        return pending is not None and getattr(pending, "provider", None) in (key, f"{site.envoy.path}.output")

    # -------------------------------------------------------------- attaching operations' hooks
    def attach(self, hooks: Iterable[Hook]) -> None:
        """Attach an operation's hooks, all or none: each site is checked (known, not yet reached) before any is
        attached, so a refused operation leaves no partial effect."""
        hooks = list(hooks)
        for site, _fn in hooks:
            if isinstance(site, MissingSite):
                site._refuse()
            if self.reached(site):
                raise InputError(f"{site.name}: the model already ran past (or is at) this site in this trace, so a library "
                                 "operation can no longer act on it; call library operations (edit.apply, "
                                 "stats.record, lens.probe) before reading this site or any later one")
        for site, fn in hooks:
            self.handles.append(_register(site, fn))

    def order_error(self, e: Exception) -> TraceOrderError:
        """nnsight's ``OutOfOrderError`` as one line naming the TransformerLens site and the rule."""
        import re

        m = re.match(r"'(.+?)(?:\.i\d+)?' was requested", str(e))
        loc = m.group(1) if m else str(e)
        if loc.split(".", 1)[0].isdigit() and loc.split(".", 1)[-1].startswith("grad"):
            return TraceOrderError("a gradient was read out of order: inside `with loss.backward():` read .grad in "
                                   "reverse forward order (the last layer first)")
        name = self.site_names.get(loc, loc.split(".", 1)[-1] if loc.startswith("model.") else loc)
        return TraceOrderError(f"{name}: read after the model ran past it; read sites in forward order (the order of "
                               "lens.site_names()), and gradients in reverse order inside `with loss.backward():`")

    def close(self) -> None:
        """Remove every hook (the trace ended, whatever way)."""
        for h in self.handles:
            h.remove()
        self.handles, self.layout = [], []


def _register(site: Site, fn: Callable[[Tensor], Tensor | None]) -> Any:
    """A torch hook calling ``fn`` on the site's value at every call of its module (a site that lays out its value
    itself, e.g. a packed encoder's :class:`~esn_lens.adapters.encoder.PackedSite`, registers its own)."""
    if hasattr(site, "register"):
        return site.register(fn)
    mod, side = site.envoy._module, site.side
    if not is_input_side(side):
        def out_hook(_m, _args, out):
            new = fn(_unwrap(out, side))
            return None if new is None else _rewrap(out, side, new)
        return mod.register_forward_hook(out_hook)

    def in_hook(_m, args, kwargs):
        if args:
            new = fn(_unwrap(args[0], side))
            return None if new is None else ((_rewrap(args[0], side, new), *args[1:]), kwargs)
        key = next(iter(kwargs))
        new = fn(_unwrap(kwargs[key], side))
        return None if new is None else (args, {**kwargs, key: _rewrap(kwargs[key], side, new)})
    return mod.register_forward_pre_hook(in_hook, with_kwargs=True)


# ---------------------------------------------------------------------- nnsight wrapper and tracer
class LensNNsight(NNsight):
    """nnsight's wrapper of the adapter's root module whose inputs are esn_lens :class:`~esn_lens.batch.Batch` es.

    ``trace(batch)`` and ``tracer.invoke(batch)`` take batches (or a dict of model inputs); several invokes are
    merged into one forward by :func:`merge_batches`, and each invoke's interventions see its own rows. ``states``
    is the stack of active :class:`TraceState` s (one per open trace or plain forward).
    """

    def __init__(self, module: torch.nn.Module, adapter: "Adapter"):
        super().__init__(module)
        object.__setattr__(self, "_esn_adapter", adapter)
        object.__setattr__(self, "states", [])

    def new_state(self, processor_id: str | None = None, site_names: dict[str, str] | None = None) -> TraceState:
        """A fresh state for one trace of this model (refusing batches of another processor than ``processor_id``;
        ``site_names`` maps nnsight locations to site names for error messages)."""
        return TraceState(pad_token_id_of(self._esn_adapter.tokenizer), self.interleaver, processor_id, site_names)

    def refuse_nested(self, what: str) -> None:
        """One line instead of nnsight's deep error when a forward of this model is opened inside another."""
        if self.states:
            raise InputError(f"{what}: a trace of this model is already running; calls that run their own forward "
                             "(lens.trace/run/generate, collect_stats, collect_attribution, record_attribution, "
                             "evaluators) go outside `with lens.trace(...)`; inside it use stats.record(lens), "
                             "edit.apply(lens), lens.probe(...) or sites' .output/.grad")

    def trace(self, *args: Any, **kwargs: Any) -> Any:
        self.refuse_nested("lens.trace")
        return super().trace(*args, **kwargs)

    @contextlib.contextmanager
    def plain(self, batch: Batch):
        """A state for one plain forward (no nnsight tracer): what a trace gives library operations, without it."""
        self.refuse_nested("lens.run")
        state = TraceState(pad_token_id_of(self._esn_adapter.tokenizer))
        state.layout = [(0, batch, batch)]
        self.states.append(state)
        try:
            yield state
        finally:
            self.states.remove(state)
            state.close()

    def _batch_size(self, *inputs: Any, **kwargs: Any) -> int:
        for x in inputs:
            if isinstance(x, Batch):
                return x.size
            if isinstance(x, dict):
                t = x.get("input_ids", x.get("inputs_embeds"))
                return int(t.shape[0]) if isinstance(t, Tensor) else 1
        t = kwargs.get("input_ids", kwargs.get("inputs_embeds"))
        return int(t.shape[0]) if isinstance(t, Tensor) else 0

    def _batch(self, invokes: list[tuple], fn: Any) -> tuple:
        extra: dict[str, Any] = {}
        items = []
        for args, kwargs in invokes:
            data = [a for a in args if isinstance(a, (Batch, dict))]
            if len(data) != 1 or len(args) != 1:
                raise InputError("lens.trace / tracer.invoke take one esn_lens Batch (lens.batch_clips(...)) "
                                 "or one dict of model inputs")
            items.append(data[0])
            extra.update(kwargs)
        inputs = self.states[-1].set_invokes(items)
        args, kw = self._esn_adapter.call_args(inputs)
        return args, {**kw, **extra}


class LensTracer(InterleavingTracer):
    """nnsight's tracer, plus: an optional inference mode, and the :class:`TraceState` it owns (pushed while the
    trace runs; its hooks are removed whatever way the trace ends)."""

    inference: bool = False
    state: TraceState | None = None

    @property
    def invoke_masks(self) -> list[PositionMasks]:
        """Each invoke's position masks padded to the combined length (in invoke order), as library operations and
        the model see them; valid inside the invokes' code (and after the trace). Example::

            with lens.trace() as tracer:
                with tracer.invoke(batch_a):
                    m = tracer.invoke_masks[0]          # batch_a's masks at the combined length
                    h = lens.blocks[0].hook_resid_post.output[m.last_token()].save()
                with tracer.invoke(batch_b):
                    logits_b = lens.logits.output[:, -1].save()
        """
        return [padded.masks for _s, _b, padded in (self.state.layout if self.state is not None else [])]

    def execute(self, code) -> None:
        states = self.envoy.states
        ctx = torch.inference_mode() if self.inference else contextlib.nullcontext()
        states.append(self.state)
        try:
            with ctx:
                super().execute(code)
        except OutOfOrderError as e:
            raise self.state.order_error(e) from e
        finally:
            states.remove(self.state)
            layout = self.state.layout
            self.state.close()
            self.state.layout = layout  # kept for tracer.invoke_masks after the trace
