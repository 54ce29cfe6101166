"""Composable edits of MLP neuron sites, applied inside one traced forward (and every generated step).

An edit touches chosen units of one site (``"pre"``, ``"act"`` -- the default -- or ``"post"``), optionally
only for some rows of the batch (``rows``), so one batch can carry several conditions. Edits in a
list are applied in order. All built-ins are registered in ``INTERVENTIONS`` exactly as a user's::

    @INTERVENTIONS.register("clip")
    def clip_units(units, limit=1.0, site="act", rows=None):
        return FunctionEdit(units, site=site, rows=rows, fn=lambda v, layer, mask: v.clamp(max=limit))
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from .vocab import EDIT_POSITIONS, check_site
from .errors import InputError
from .registry import Registry

INTERVENTIONS: Registry[Callable[..., "Edit"]] = Registry("intervention")
#: named position sets an edit can be limited to (or a boolean (batch, pos) mask); "all" = every position
POSITIONS = EDIT_POSITIONS


def _units_tensor(units) -> Bool[Tensor, "layer neuron"]:
    if hasattr(units, "masks") and units.masks.ndim == 3:  # a NeuronSet: one set per emotion
        if units.masks.shape[0] != 1:
            raise InputError(f"units: a NeuronSet holds one set per emotion ({', '.join(units.emotions)}); pass one "
                             "emotion's units (neurons['angry']) or all of them on purpose (neurons.all_units())")
        return units.masks[0]
    t = torch.as_tensor(units)
    if t.dtype != torch.bool or t.ndim != 2:
        raise InputError(f"units must be a boolean (layer, neuron) mask or a NeuronSet, got {t.dtype} of shape {tuple(t.shape)}")
    return t


def _rows_mask(rows: Any, who: str) -> Bool[Tensor, " batch"] | None:
    """``rows`` as a boolean (batch,) tensor; :class:`InputError` for any other dtype or shape (a float or index
    tensor would silently mean something else)."""
    if rows is None:
        return None
    try:
        t = rows if isinstance(rows, Tensor) else None if isinstance(rows, (str, bytes)) else torch.as_tensor(rows)
    except (TypeError, ValueError, RuntimeError):
        t = None
    if t is None or t.dtype != torch.bool or t.ndim != 1:
        what = f"{t.dtype} tensor of shape {tuple(t.shape)}" if t is not None else type(rows).__name__
        raise InputError(f"{who}: rows must be a boolean (batch,) mask (e.g. torch.tensor([True, False])), got {what}")
    return t


@dataclass
class Edit:
    """Base class: an in-place edit of the chosen ``units`` (layer x neuron mask) of one ``site``.

    ``rows``: boolean (batch,) mask of rows the edit applies to (``None`` = all rows).
    Subclasses implement :meth:`edit_` which receives the site's value for one layer.
    """

    units: Any  # Bool[Tensor, "layer neuron"] (or a one-emotion NeuronSet); validated in __post_init__
    site: str = "act"
    rows: Bool[Tensor, " batch"] | None = None
    positions: str | Bool[Tensor, "batch pos"] | None = None

    def __post_init__(self) -> None:
        self.units = _units_tensor(self.units)
        check_site(self.site)
        self.rows = _rows_mask(self.rows, type(self).__name__)
        if isinstance(self.positions, str) and self.positions not in POSITIONS:
            raise InputError(f"positions: unknown position set {self.positions!r}; expected one of {list(POSITIONS)} "
                             "or a boolean (batch, pos) mask")
        if self.positions == "all":
            self.positions = None

    # -------------------------------------------------------------- inside a trace
    def apply(self, lens: Any, batch: Any = None) -> "Edit":
        """Apply the edit inside ``with lens.trace(batch):`` (or ``lens.generate``): at every position selected by
        ``positions`` (prefill and generated tokens) of the rows selected by ``rows``, at every layer with units.

        One line of sugar for ``lens.attach(edit.hooks, batch)``: the trace attaches the hooks :meth:`hooks` produces.
        Composes with the user's code in the same trace; call it before the model reaches the edited sites (after
        reading one of them, or a later site, it refuses with one line naming the site). Inside
        ``tracer.invoke(batch)`` it acts on that invoke's rows. Example::

            with lens.trace(batch):
                deactivate(units, positions="audio").apply(lens)
                logits = lens.logits.save()
        """
        lens.attach(self.hooks, batch)
        return self

    def hooks(self, model: Any, scope: Any) -> list[tuple[Any, Callable[[Tensor], Tensor | None]]]:
        """The ``(site, fn)`` pairs that perform this edit on ``model``'s sites for the rows of ``scope`` (a
        :class:`~esn_lens.batch.Scope`); checks the units, rows and positions against them first."""
        self.check_shape(model.n_layers, model.d_mlp)
        if self.rows is not None and scope.batch is not None and int(self.rows.shape[0]) != scope.size:
            raise InputError(f"{type(self).__name__}: rows mask has {int(self.rows.shape[0])} rows, the batch has "
                             f"{scope.size}")
        pos = None
        if self.positions is not None:
            masks = scope.need_batch(f"{type(self).__name__} with positions=").masks
            pos = (masks.select(self.positions) if isinstance(self.positions, str)
                   else torch.as_tensor(self.positions, dtype=torch.bool))
            if tuple(pos.shape) != tuple(masks.padding.shape):
                raise InputError(f"{type(self).__name__}: positions mask has shape {tuple(pos.shape)}, the batch is "
                                 f"{tuple(masks.padding.shape)} (batch, pos)")
        return [(model.blocks[layer].mlp.site(self.site), self._hook_fn(layer, scope, pos))
                for layer in self.units.any(1).nonzero().flatten().tolist()]

    def _hook_fn(self, layer: int, sc: Any, pos: Tensor | None) -> Callable[[Tensor], Tensor | None]:
        def fn(value: Tensor) -> Tensor | None:
            v = sc.rows(value)
            m = self.unit_mask(v, layer)
            if m is None:
                return None
            p = pos
            if p is not None and v.shape[1] != p.shape[1]:  # a generated token: valid, not prompt, not audio, last
                if not isinstance(self.positions, str) or self.positions == "audio":
                    return None
                p = None
            copy = value.requires_grad and torch.is_grad_enabled()
            if copy:  # out of place, so autograd sees the edit
                value = value.clone()
                v = sc.rows(value)
            if p is None:
                self.edit_(v, layer, m)
            else:  # only the condition's rows are copied and edited (a batch holds many conditions' rows)
                s, e = _row_block(m) or (0, v.shape[0])
                sub = v[s:e]
                new = sub.clone()
                self.edit_(new, layer, m[s:e])
                sub.copy_(torch.where(p[s:e].to(v.device)[:, :, None], new, sub))
            return value if copy else None

        return fn

    def check_shape(self, n_layers: int, d_mlp: int) -> None:
        """Refuse units of another model shape, naming both shapes."""
        if tuple(self.units.shape) != (n_layers, d_mlp):
            raise InputError(f"{type(self).__name__}: units mask has shape {tuple(self.units.shape)}, "
                             f"the model has (layers, d_mlp) = ({n_layers}, {d_mlp})")

    def unit_mask(self, value: Float[Tensor, "batch pos neuron"], layer: int) -> Bool[Tensor, "batch neuron"] | None:
        """(batch, neuron) mask of entries to edit in this layer, or None when nothing is touched."""
        u = self.units[layer].to(value.device)
        if not bool(u.any()):
            return None
        B = value.shape[0]
        rows = torch.ones(B, dtype=torch.bool, device=value.device) if self.rows is None else self.rows.to(value.device)
        if rows.shape[0] != B:
            raise InputError(f"{type(self).__name__}: rows mask has {rows.shape[0]} rows, the batch has {B}")
        return rows[:, None] & u[None, :]

    def edit_(self, value: Float[Tensor, "batch pos neuron"], layer: int, mask: Bool[Tensor, "batch neuron"]) -> None:
        raise NotImplementedError


def _check_finite_number(name: str, x: Any) -> None:
    """Refuse a non-finite (or non-numeric) scalar parameter of an edit, naming it."""
    try:
        ok = math.isfinite(float(x))
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {x!r}") from None
    if not ok:
        raise InputError(f"{name} must be finite, got {x!r}")


def _finite_(value: Tensor) -> None:
    """Keep low-precision values finite after an amplifying edit (fp16 overflow -> the largest finite value)."""
    if value.dtype in (torch.float16, torch.bfloat16):
        fi = torch.finfo(value.dtype)
        value.clamp_(fi.min, fi.max)


@dataclass
class Gain(Edit):
    """Multiply the chosen units by ``gain`` (0 = deactivation, 1 + alpha = steering)."""

    gain: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_finite_number("gain", self.gain)

    def edit_(self, value, layer, mask):
        # the factor in float32 (float64 for float64 values): a gain beyond fp16's range saturates instead of
        # failing to convert; the product is then clamped to the value dtype's finite range
        fdt = torch.float64 if value.dtype == torch.float64 else torch.float32
        fi = torch.finfo(fdt)
        g = min(max(float(self.gain), fi.min), fi.max)
        block = _row_block(mask)
        if block is not None:
            # the usual case (a condition's rows are one block): touch only the chosen units of those rows (in any
            # float dtype: the product is computed in float32 for half types, as the factor path below does)
            units = mask[block[0]].nonzero().squeeze(1)
            sub = value[block[0]:block[1]]
            edited = sub[..., units] * g
            if abs(g) > 1:
                _finite_(edited)
            sub[..., units] = edited
            return
        factor = torch.ones(mask.shape, dtype=fdt, device=value.device).masked_fill_(mask, g)
        value.mul_(factor[:, None, :])
        if abs(g) > 1:
            _finite_(value)


def _row_block(mask: Bool[Tensor, "batch neuron"]) -> tuple[int, int] | None:
    """``(start, stop)`` when the edited rows are one contiguous block with the same units, else None."""
    rows = mask.any(1).nonzero().squeeze(1)
    if rows.numel() == 0:
        return None
    start, stop = int(rows[0]), int(rows[-1]) + 1
    if stop - start != rows.numel() or not bool((mask[start:stop] == mask[start]).all()):
        return None
    return start, stop


@dataclass
class SetTo(Edit):
    """Replace the chosen units by fixed per-unit ``values`` (layer, neuron), e.g. their mean (mean-ablation)."""

    values: Float[Tensor, "layer neuron"] | None = None

    def edit_(self, value, layer, mask):
        if self.values is None:
            raise InputError("SetTo needs values of shape (layer, neuron)")
        v = self.values[layer].to(device=value.device, dtype=value.dtype)
        value.copy_(torch.where(mask[:, None, :], v[None, None, :], value))


@dataclass
class AddTo(Edit):
    """Add ``delta`` (a float, or per-unit values of shape (layer, neuron)) to the chosen units."""

    delta: float | Float[Tensor, "layer neuron"] = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.delta, Tensor):
            if not bool(torch.isfinite(self.delta).all()):
                raise InputError("delta has NaN or inf entries")
        else:
            _check_finite_number("delta", self.delta)

    def edit_(self, value, layer, mask):
        d = self.delta[layer].to(value.device, value.dtype) if isinstance(self.delta, Tensor) else torch.tensor(
            float(self.delta), dtype=value.dtype, device=value.device).expand(mask.shape[1])
        value.add_(mask[:, None, :].to(value.dtype) * d[None, None, :])
        _finite_(value)


@dataclass
class FunctionEdit(Edit):
    """A user edit: ``fn(value, layer, mask) -> new value`` (only masked entries are taken from the result)."""

    fn: Callable[[Tensor, int, Tensor], Tensor] | None = None

    def edit_(self, value, layer, mask):
        new = self.fn(value, layer, mask)  # type: ignore[misc]
        if tuple(new.shape) != tuple(value.shape):
            raise InputError(f"user edit returned shape {tuple(new.shape)}, expected {tuple(value.shape)}")
        value.copy_(torch.where(mask[:, None, :], new.to(value.dtype), value))


@INTERVENTIONS.register("deactivate")
def deactivate(units, site: str = "act", rows=None, positions=None) -> Gain:
    """Zero the units (the paper's deactivation, g <- g * 0). Example: ``deactivate(neurons["angry"])``."""
    return Gain(units, site=site, rows=rows, positions=positions, gain=0.0)


@INTERVENTIONS.register("steer")
def steer(units, alpha: float = 1.0, site: str = "act", rows=None, positions=None) -> Gain:
    """Amplify the units, g <- g * (1 + alpha). Example: ``steer(neurons["happy"], alpha=2.0)``."""
    _check_finite_number("steer: alpha", alpha)
    return Gain(units, site=site, rows=rows, positions=positions, gain=1.0 + float(alpha))


@INTERVENTIONS.register("mean_ablate")
def mean_ablate(units, stats, site: str | None = None, rows=None, positions=None) -> SetTo:
    """Set the units to their mean over all counted tokens in ``stats`` (a NeuronStats of the same site)."""
    return SetTo(units, site=site or stats.site, rows=rows, positions=positions,
                 values=stats.overall_mean.to(torch.float32))


@INTERVENTIONS.register("add")
def add(units, delta: float | Tensor = 1.0, site: str = "act", rows=None, positions=None) -> AddTo:
    """Add ``delta`` to the units (additive steering)."""
    return AddTo(units, site=site, rows=rows, positions=positions, delta=delta)


def make_edit(name: str, units, **kwargs) -> Edit:
    """Build a registered intervention by name: ``make_edit("steer", units, alpha=2)``."""
    return INTERVENTIONS.get(name)(units, **kwargs)


#: the kinds of a :class:`Condition` the library builds and measures; anything else is a user's condition
CONDITION_KINDS = ("baseline", "deactivate", "steer", "user")


@dataclass
class Condition:
    """A list of edits applied together to some rows of an evaluation, with what it means.

    ``kind``: ``"baseline"`` (no edits), ``"deactivate"`` (one emotion's units edited by the deactivation-stage
    intervention), ``"steer"`` (one emotion's units amplified by ``alpha``) or ``"user"``; ``emotion``: the
    emotion whose units are edited; ``neurons``: the name of the neuron set they come from; ``alpha``: the
    steering strength. Results and metrics look conditions up by these fields (:meth:`matches`); ``name`` is
    only the display name, derived from them when not given (``"baseline"``, ``"conact|mask:angry"``,
    ``"conact|steer:happy:2"``). ``Condition("mine", edits)`` is a user's condition; ``Condition("baseline")``
    (no edits) is the baseline. Build the library's with :meth:`baseline`, :meth:`deactivate`, :meth:`steer`.
    """

    name: str = ""
    edits: list[Edit] = field(default_factory=list)
    kind: str = "user"
    emotion: str | None = None
    neurons: str | None = None
    alpha: float | None = None

    def __post_init__(self) -> None:
        self.edits = list(self.edits)
        if self.kind not in CONDITION_KINDS:
            raise InputError(f"condition kind must be one of {list(CONDITION_KINDS)}, got {self.kind!r}")
        if self.kind == "user" and self.name == "baseline" and not self.edits:
            self.kind = "baseline"
        if self.kind in ("deactivate", "steer") and self.emotion is None:
            raise InputError(f"a {self.kind!r} condition needs the emotion whose units it edits")
        if self.kind == "steer":
            if self.alpha is None:
                raise InputError("a 'steer' condition needs alpha")
            self.alpha = float(self.alpha)
        if not self.name:
            if self.kind == "user":
                raise InputError("a user's condition needs a name: Condition('mine', edits)")
            self.name = self.display_name()

    def display_name(self) -> str:
        """The name derived from the fields (the keys of results and stored predictions)."""
        prefix = f"{self.neurons}|" if self.neurons else ""
        if self.kind == "baseline":
            return "baseline"
        if self.kind == "deactivate":
            return f"{prefix}mask:{self.emotion}"
        if self.kind == "steer":
            return f"{prefix}steer:{self.emotion}:{self.alpha:g}"
        return self.name

    def matches(self, kind: str | None = None, *, emotion: str | None = None, neurons: str | None = None,
                alpha: float | None = None) -> bool:
        """True when every given field equals this condition's (``None`` = any)."""
        return ((kind is None or self.kind == kind) and (emotion is None or self.emotion == emotion)
                and (neurons is None or self.neurons == neurons)
                and (alpha is None or (self.alpha is not None and float(self.alpha) == float(alpha))))

    @classmethod
    def baseline(cls) -> "Condition":
        """The un-edited model."""
        return cls("baseline", [], kind="baseline")

    @classmethod
    def deactivate(cls, emotion: str, edits: list[Edit], *, neurons: str | None = None) -> "Condition":
        """``edits`` of ``emotion``'s units (of the set named ``neurons``): one row of the deactivation heatmap."""
        return cls("", edits, kind="deactivate", emotion=emotion, neurons=neurons)

    @classmethod
    def steer(cls, emotion: str, alpha: float, edits: list[Edit], *, neurons: str | None = None) -> "Condition":
        """``edits`` amplifying ``emotion``'s units by ``alpha``: one point of the dose-response."""
        return cls("", edits, kind="steer", emotion=emotion, neurons=neurons, alpha=alpha)


def find_condition(conditions, kind: str | None = None, *, emotion: str | None = None, neurons: str | None = None,
                   alpha: float | None = None) -> Condition:
    """The one condition of ``conditions`` with these fields (:class:`InputError` when none or several)."""
    hits = [c for c in conditions if c.matches(kind, emotion=emotion, neurons=neurons, alpha=alpha)]
    if len(hits) != 1:
        want = {k: v for k, v in (("kind", kind), ("emotion", emotion), ("neurons", neurons), ("alpha", alpha))
                if v is not None}
        raise InputError(f"{'no' if not hits else len(hits)} condition(s) with {want}; conditions: "
                         f"{[c.name for c in conditions]}")
    return hits[0]
