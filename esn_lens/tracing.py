"""The open core: nnsight tracing of the wrapped model, with TransformerLens names for its sites.

``lens.trace(batch)`` returns nnsight's own tracer (``with lens.trace(batch) as tracer:``), and the
names below are thin views over real nnsight envoys of the user's model (no copy, nothing rewritten):

=================================  ==========================================================
``lens.embed``                     token embedding output (``embed_tokens``)
``lens.audio_encoder``             the audio tower's output hidden states (audio models only)
``lens.blocks[l].hook_resid_pre``  the decoder layer's input hidden states
``lens.blocks[l].attn``            the attention block's output (``hook_attn_out``)
``lens.blocks[l].mlp.hook_pre``    gate_proj output
``lens.blocks[l].mlp.hook_act``    act_fn output (the paper's neuron site)
``lens.blocks[l].mlp.hook_post``   down_proj input (act_fn(gate) * up)
``lens.blocks[l].mlp``             the MLP's output (``hook_mlp_out``)
``lens.blocks[l].hook_resid_post`` the decoder layer's output hidden states
``lens.logits``                    the LM head's output (batch, pos, vocab)
=================================  ==========================================================

Each :class:`Site` has ``.output`` (read, ``.save()``, assign, index-assign), ``.save()``, ``.skip(value)``
(for module outputs) and ``.envoy`` (the raw nnsight envoy). Everything nnsight offers works on them:
``tracer.invoke`` (several batches in one forward), ``with loss.backward(): x.grad``, ``tracer.stop()``,
``tracer.iter`` in generation. Accesses follow forward order, as in any nnsight trace.

The library's own operations (edits, statistics, probes) are called inside the same trace; they attach
torch hooks to the site modules for the trace's duration, so they compose with user code in any order.
At a site, a hook sees the value after the user's nnsight edits of that site (nnsight hands a module's
output to the trace body before torch's forward hooks run).
"""
from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import torch
from jaxtyping import Bool
from nnsight import NNsight
from nnsight.intervention.tracer import InterleavingTracer
from torch import Tensor

from .errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from .lens import Batch, Lens


# ---------------------------------------------------------------------- named sites
class Site:
    """A named value of the model inside a trace: an nnsight envoy plus the side of it that holds the value.

    ``side``: ``"output"`` (the module's output), ``"input"`` (its first input), ``"output0"`` (element 0 of
    a tuple output, e.g. attention) or ``"hidden"`` (``last_hidden_state`` of a model output).
    Example (inside ``with lens.trace(batch):``): ``h = lens.blocks[2].hook_resid_post.output.save()``.
    """

    def __init__(self, name: str, envoy: Any, side: str = "output"):
        self.name, self.envoy, self.side = name, envoy, side

    @property
    def output(self) -> Any:
        """The site's value (a real tensor inside the trace)."""
        e = self.envoy
        if self.side == "output":
            return e.output
        if self.side == "input":
            return e.input
        out = e.output
        if self.side == "output0":
            return out[0] if isinstance(out, (tuple, list)) else out
        if isinstance(out, Tensor):  # "hidden"
            return out
        return out["last_hidden_state"] if hasattr(out, "keys") else out[0]

    @output.setter
    def output(self, value: Any) -> None:
        e = self.envoy
        if self.side == "output":
            e.output = value
        elif self.side == "input":
            e.input = value
        else:
            out = e.output
            if isinstance(out, Tensor):
                e.output = value
            elif isinstance(out, tuple):
                e.output = (value, *out[1:])
            else:
                new = out.__class__(**{**out, "last_hidden_state": value}) if hasattr(out, "keys") else [value, *out[1:]]
                e.output = new

    def save(self) -> Any:
        """Keep the value past the trace: ``lens.logits.save()`` is ``lens.logits.output.save()``."""
        import nnsight

        return nnsight.save(self.output)

    def skip(self, replacement: Any) -> None:
        """Skip the module and use ``replacement`` as its output (module-output sites only)."""
        if self.side == "input":
            raise InputError(f"{self.name} is a module's input; .skip() replaces a module's output")
        self.envoy.skip(replacement)

    def __repr__(self) -> str:
        return f"Site({self.name!r}, {self.side} of {self.envoy.path})"


class MLPSite(Site):
    """``lens.blocks[l].mlp``: the MLP output, with its neuron sites ``hook_pre``, ``hook_act``, ``hook_post``."""

    def __init__(self, name: str, envoy: Any, hook_pre: Site, hook_act: Site, hook_post: Site):
        super().__init__(name, envoy, "output")
        self.hook_pre, self.hook_act, self.hook_post = hook_pre, hook_act, hook_post

    def site(self, site: str) -> Site:
        """The neuron site by its short name: ``"pre"``, ``"act"`` or ``"post"``."""
        return {"pre": self.hook_pre, "act": self.hook_act, "post": self.hook_post}[site]


@dataclass(frozen=True)
class BlockSites:
    """The named sites of one decoder layer, in forward order."""

    hook_resid_pre: Site
    attn: Site
    mlp: MLPSite
    hook_resid_post: Site

    @property
    def hook_attn_out(self) -> Site:
        return self.attn

    @property
    def hook_mlp_out(self) -> Site:
        return self.mlp


class Blocks:
    """``lens.blocks``: a read-only list of :class:`BlockSites` (negative indices allowed)."""

    def __init__(self, blocks: list[BlockSites]):
        self._blocks = blocks

    def __getitem__(self, i: int) -> BlockSites:
        n = len(self._blocks)
        if not isinstance(i, int) or not -n <= i < n:
            raise InputError(f"block {i!r} out of range: the model has {n} decoder layers (0..{n - 1})")
        return self._blocks[i]

    def __len__(self) -> int:
        return len(self._blocks)

    def __iter__(self):
        return iter(self._blocks)


def envoy_at(root: Any, path: str) -> Any:
    """The nnsight envoy at a dotted module path (``"model.layers.3.mlp"``) under ``root``."""
    env = root
    for part in path.split("."):
        env = env[int(part)] if part.isdigit() else getattr(env, part)
    return env


class MissingSite(Site):
    """A named site the adapter does not map (e.g. a custom model without ``embed_tokens``): any use says how to fix it."""

    def __init__(self, name: str, why: str):
        super().__init__(name, None, "output")
        self.why = why

    def _refuse(self, *_: Any) -> Any:
        raise InputError(f"{self.name}: {self.why}")

    output = property(_refuse, _refuse)  # type: ignore[assignment]
    save = skip = _refuse  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"MissingSite({self.name!r})"


def _site_or_missing(nn: Any, name: str, path: str, side: str, attr: str, adapter: Any) -> Site:
    try:
        return Site(name, envoy_at(nn, path), side)
    except (AttributeError, IndexError):
        return MissingSite(name, f"the model has no module {path!r}; set {type(adapter).__name__}.{attr} to its path")


def build_sites(nn: Any, adapter: Any) -> tuple[Blocks, Site, Site | None, Site]:
    """The named sites of a wrapped model from its adapter's module paths: (blocks, embed, audio_encoder, logits)."""
    from .adapters.base import hook_name

    blocks = []
    for layer in range(adapter.n_layers):
        neuron = {}
        for site in ("pre", "act", "post"):
            path, side = adapter.site_path(layer, site)
            neuron[site] = Site(hook_name(layer, site), envoy_at(nn, path), side)
        mlp = MLPSite(f"blocks.{layer}.hook_mlp_out", envoy_at(nn, adapter.mlp_path(layer)),
                      neuron["pre"], neuron["act"], neuron["post"])
        layer_env = envoy_at(nn, adapter.layer_path(layer))
        attn = _site_or_missing(nn, f"blocks.{layer}.hook_attn_out", adapter.attn_path(layer), "output0", "attn_path", adapter)
        blocks.append(BlockSites(Site(f"blocks.{layer}.hook_resid_pre", layer_env, "input"), attn,
                                 mlp, Site(f"blocks.{layer}.hook_resid_post", layer_env, "output0")))
    embed = _site_or_missing(nn, "hook_embed", adapter.embed_path, "output", "embed_path", adapter)
    audio = None
    if adapter.audio_tower_path is not None:
        audio = Site("audio_encoder", envoy_at(nn, adapter.audio_tower_path), "hidden")
    logits = _site_or_missing(nn, "logits", adapter.lm_head_path, "output", "lm_head_path", adapter)
    return Blocks(blocks), embed, audio, logits


def site_by_name(lens: "Lens", name: str) -> Site:
    """A site from its TransformerLens name, e.g. ``"blocks.3.mlp.hook_act"`` or ``"blocks.0.hook_resid_post"``."""
    parts = name.split(".")
    try:
        if name in ("hook_embed", "embed"):
            return lens.embed
        if name in ("audio_encoder", "hook_audio"):
            if lens.audio_encoder is None:
                raise InputError(f"{lens.adapter.name}: this model has no audio encoder")
            return lens.audio_encoder
        if name in ("logits", "unembed"):
            return lens.logits
        if parts[0] == "blocks" and len(parts) >= 3 and parts[1].lstrip("-").isdigit():
            block = lens.blocks[int(parts[1])]
            rest = ".".join(parts[2:])
            table = {"hook_resid_pre": block.hook_resid_pre, "hook_resid_post": block.hook_resid_post,
                     "attn": block.attn, "hook_attn_out": block.attn, "mlp": block.mlp, "hook_mlp_out": block.mlp,
                     "mlp.hook_pre": block.mlp.hook_pre, "mlp.hook_act": block.mlp.hook_act,
                     "mlp.hook_post": block.mlp.hook_post}
            if rest in table:
                return table[rest]
    except InputError:
        raise
    raise InputError(f"unknown site name {name!r}; expected hook_embed, audio_encoder, logits or "
                     "blocks.<l>.{hook_resid_pre, hook_attn_out, mlp.hook_pre, mlp.hook_act, mlp.hook_post, "
                     "hook_mlp_out, hook_resid_post}")


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
    from .adapters.base import PositionMasks
    from .lens import Batch

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
                              pad_to(m.audio, P, 1, False, left), pad_to(m.prompt_text, P, 1, False, left))
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
    masks = PositionMasks(cat("padding"), cat("special"), cat("audio"), cat("prompt_text"))
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
        from .lens import Batch

        for x in inputs:
            if isinstance(x, Batch):
                return x.size
            if isinstance(x, dict):
                t = x.get("input_ids", x.get("inputs_embeds"))
                return int(t.shape[0]) if isinstance(t, Tensor) else 1
        t = kwargs.get("input_ids", kwargs.get("inputs_embeds"))
        return int(t.shape[0]) if isinstance(t, Tensor) else 0

    def _batch(self, invokes: list[tuple], fn: Any) -> tuple:
        from .lens import Batch

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


def _unwrap(out: Any, side: str) -> Tensor:
    if side in ("output", "input") or isinstance(out, Tensor):
        return out
    if side == "output0":
        return out[0]
    return out["last_hidden_state"] if hasattr(out, "keys") else out[0]


def _rewrap(out: Any, side: str, new: Tensor) -> Any:
    if side == "output" or isinstance(out, Tensor):
        return new
    if side == "output0":
        return (new, *out[1:])
    if hasattr(out, "keys"):
        return out.__class__(**{**out, "last_hidden_state": new})
    return (new, *out[1:])


def _count_at_start(key: str) -> int:
    """How often the location had run before the running trace began (nnsight keeps running counts)."""
    from nnsight.intervention.interleaver import Mediator

    try:
        return Mediator.current("esn_lens").counts_at_start.get(key, 0)
    except Exception:  # noqa: BLE001 - not inside a worker
        return 0


def attach_hook(lens: "Lens", site: Site, fn: Callable[[Tensor], Tensor | None]) -> None:
    """Call ``fn(value)`` on a site's value at every call of its module during the active trace.

    ``fn`` edits the value in place and returns None, or returns a replacement. Removed when the trace ends.
    """
    if not lens._hooks:
        raise InputError("library operations that act inside a trace must be called inside `with lens.trace(...)`")
    mod, side = site.envoy._module, site.side
    key = f"{site.envoy.path}.{'input' if side == 'input' else 'output'}"
    if lens.nn.interleaver.counts.get(key, 0) > _count_at_start(key):
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
