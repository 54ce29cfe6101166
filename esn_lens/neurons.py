"""NeuronSet: per-emotion selections of (layer, neuron) units at one MLP site.

A :class:`NeuronSet` is what the selectors produce and what the interventions consume: one boolean
mask of shape (layer, neuron) per emotion, plus where it came from (selector, budget, site, model).

Example::

    ns = find_neurons(stats, "mad", top_frac=0.005)
    ns["angry"]            # Bool[Tensor, "layer neuron"]
    ns.indices("angry")    # Int64[Tensor, "k 2"]: (layer, neuron) rows
    ns.layer_counts()      # Int64[Tensor, "emotion layer"]
    ns.save("angry.safetensors"); NeuronSet.load("angry.safetensors", expect_fingerprint=fp)
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import einops
import torch
from jaxtyping import Bool, Float64, Int64
from torch import Tensor

from .vocab import SITES as _SITES
from .errors import CorruptFileError, IncompatibleError, InputError
from .io import load_tensors, save_tensors

NEURON_SET_KIND = "neuron_set"
#: The MLP sites a neuron set may refer to (see DESIGN.md): gate_proj output, act_fn output, down_proj input.
SITES = tuple(_SITES)
#: Overlap measures of :meth:`NeuronSet.overlap_matrix`.
OVERLAP_METRICS = ("jaccard", "intersection", "overlap")


def _jsonable(obj: Any) -> Any:
    """``obj`` if it is JSON-serialisable, else its ``repr`` (so metadata never blocks a save)."""
    try:
        json.dumps(obj)
        return obj
    except (TypeError, ValueError):
        if isinstance(obj, Mapping):
            return {str(k): _jsonable(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [_jsonable(v) for v in obj]
        return repr(obj)


@dataclass(eq=False)
class NeuronSet:
    """Per-emotion selected units: ``masks[e, layer, neuron]`` is True where the unit is chosen for ``e``.

    ``selector`` names how the set was made, ``top_frac`` the budget r (None for an absolute count or a
    hand-made set), ``site`` the MLP site ("pre", "act" or "post"), ``model_fingerprint`` the model
    (see :func:`esn_lens.stats.fingerprint_of`); ``meta`` is free JSON-able metadata. Masks are kept on
    the CPU (move them with ``ns.masks.to(device)`` where an intervention needs them).

    Example: ``NeuronSet(torch.zeros(2, 4, 8, dtype=torch.bool), ("angry", "sad")).counts == {"angry": 0, "sad": 0}``.
    """

    masks: Bool[Tensor, "emotion layer neuron"]
    emotions: tuple[str, ...]
    selector: str = "manual"
    top_frac: float | None = None
    site: str = "act"
    model_fingerprint: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.masks, Tensor) or self.masks.dtype != torch.bool or self.masks.ndim != 3:
            raise InputError(
                f"NeuronSet masks must be a bool tensor of shape (emotion, layer, neuron), got "
                f"{getattr(self.masks, 'dtype', type(self.masks).__name__)} {tuple(getattr(self.masks, 'shape', ()))}"
            )
        self.masks = self.masks.detach().to("cpu").contiguous()
        self.emotions = tuple(str(e) for e in self.emotions)
        if len(self.emotions) != self.masks.shape[0]:
            raise InputError(f"NeuronSet has {self.masks.shape[0]} mask rows but {len(self.emotions)} emotions {self.emotions}")
        if len(set(self.emotions)) != len(self.emotions):
            raise InputError(f"NeuronSet emotions must be distinct, got {self.emotions}")
        if self.site not in SITES:
            raise InputError(f"unknown site {self.site!r}; expected one of {list(SITES)}")
        if self.top_frac is not None:
            self.top_frac = float(self.top_frac)
        self.meta = dict(self.meta)

    # ------------------------------------------------------------------ shape and access
    @property
    def n_layers(self) -> int:
        """Number of layers L."""
        return int(self.masks.shape[1])

    @property
    def d_mlp(self) -> int:
        """Number of neurons per layer N."""
        return int(self.masks.shape[2])

    def _row(self, emotion: str) -> int:
        try:
            return self.emotions.index(emotion)
        except ValueError:
            raise KeyError(f"unknown emotion {emotion!r}; this NeuronSet has {list(self.emotions)}") from None

    def __getitem__(self, emotion: str) -> Bool[Tensor, "layer neuron"]:
        """The (layer, neuron) mask of one emotion. Example: ``ns["angry"].sum()``."""
        return self.masks[self._row(emotion)]

    def __contains__(self, emotion: object) -> bool:
        return emotion in self.emotions

    def __iter__(self):
        return iter(self.emotions)

    def __len__(self) -> int:
        return len(self.emotions)

    def all_units(self) -> Bool[Tensor, "layer neuron"]:
        """The union of every emotion's units (e.g. to deactivate all of them on purpose)."""
        return self.masks.any(0)

    def indices(self, emotion: str) -> Int64[Tensor, "k 2"]:
        """The chosen units of ``emotion`` as (layer, neuron) rows, sorted by layer then neuron.

        Example: ``ns.indices("angry")[:, 0]`` are the layers.
        """
        return torch.nonzero(self[emotion], as_tuple=False).to(torch.int64)

    @property
    def counts(self) -> dict[str, int]:
        """Number of chosen units per emotion. Example: ``ns.counts["angry"]``."""
        c = einops.reduce(self.masks.to(torch.int64), "e l n -> e", "sum").tolist()
        return dict(zip(self.emotions, (int(x) for x in c)))

    def layer_counts(self) -> Int64[Tensor, "emotion layer"]:
        """Chosen units per emotion and layer (the layer-wise ESN histogram). Example: ``ns.layer_counts()[0]``."""
        return einops.reduce(self.masks.to(torch.int64), "e l n -> e l", "sum")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_indices(
        cls,
        emotions: Sequence[str],
        indices: Mapping[str, Iterable[Sequence[int]] | Tensor],
        n_layers: int,
        d_mlp: int,
        *,
        selector: str = "manual",
        top_frac: float | None = None,
        site: str = "act",
        model_fingerprint: str = "",
        meta: dict[str, Any] | None = None,
    ) -> "NeuronSet":
        """Build a set from ``{emotion: [(layer, neuron), ...]}``; emotions left out get no units.

        Out-of-range indices are refused naming the index and the valid range.
        Example: ``NeuronSet.from_indices(("angry",), {"angry": [(0, 3)]}, n_layers=2, d_mlp=8)``.
        """
        emotions = tuple(emotions)
        if n_layers <= 0 or d_mlp <= 0:
            raise InputError(f"n_layers and d_mlp must be positive, got {n_layers}, {d_mlp}")
        unknown = [e for e in indices if e not in emotions]
        if unknown:
            raise InputError(f"indices given for unknown emotion(s) {unknown}; emotions are {list(emotions)}")
        masks = torch.zeros(len(emotions), n_layers, d_mlp, dtype=torch.bool)
        for row, emotion in enumerate(emotions):
            if emotion not in indices:
                continue
            idx = indices[emotion]
            idx = idx.tolist() if isinstance(idx, Tensor) else [tuple(p) for p in idx]
            for pair in idx:
                if len(pair) != 2:
                    raise InputError(f"index {tuple(pair)} for emotion {emotion!r} is not a (layer, neuron) pair")
                layer, neuron = (int(v) for v in pair)
                if not (0 <= layer < n_layers and 0 <= neuron < d_mlp):
                    raise InputError(
                        f"index (layer={layer}, neuron={neuron}) for emotion {emotion!r} is out of range: "
                        f"layer must be in 0..{n_layers - 1}, neuron in 0..{d_mlp - 1}"
                    )
                masks[row, layer, neuron] = True
        return cls(masks, emotions, selector=selector, top_frac=top_frac, site=site,
                   model_fingerprint=model_fingerprint, meta=dict(meta or {}))

    # ------------------------------------------------------------------ set algebra
    def check_compatible(self, other: "NeuronSet", *, same_emotions: bool = True, same_model: bool = True) -> None:
        """Raise :class:`IncompatibleError` unless ``other`` refers to the same units (model, site, shape, emotions)."""
        if not isinstance(other, NeuronSet):
            raise IncompatibleError(f"cannot combine a NeuronSet with {type(other).__name__}")
        if same_model and self.model_fingerprint != other.model_fingerprint:
            raise IncompatibleError(
                f"cannot combine neuron sets of different models ({self.model_fingerprint!r} vs {other.model_fingerprint!r})"
            )
        if self.site != other.site:
            raise IncompatibleError(f"cannot combine neuron sets of different sites ({self.site!r} vs {other.site!r})")
        if self.masks.shape[1:] != other.masks.shape[1:]:
            raise IncompatibleError(
                f"cannot combine neuron sets of different shapes (layers x d_mlp {tuple(self.masks.shape[1:])} "
                f"vs {tuple(other.masks.shape[1:])})"
            )
        if same_emotions and self.emotions != other.emotions:
            raise IncompatibleError(f"cannot combine neuron sets of different emotions ({self.emotions} vs {other.emotions})")

    def _combine(self, other: "NeuronSet", op: str) -> "NeuronSet":
        self.check_compatible(other)
        masks = self.masks | other.masks if op == "union" else self.masks & other.masks
        sym = "|" if op == "union" else "&"
        same_r = self.top_frac == other.top_frac
        return NeuronSet(
            masks, self.emotions,
            selector=self.selector if self.selector == other.selector else f"({self.selector}){sym}({other.selector})",
            top_frac=self.top_frac if same_r else None, site=self.site, model_fingerprint=self.model_fingerprint,
            meta={"op": op, "of": [_jsonable(self.meta), _jsonable(other.meta)]},
        )

    def union(self, other: "NeuronSet") -> "NeuronSet":
        """Units chosen in either set, per emotion. Example: ``(a.union(b)).counts``; also ``a | b``."""
        return self._combine(other, "union")

    def intersection(self, other: "NeuronSet") -> "NeuronSet":
        """Units chosen in both sets, per emotion. Example: ``a.intersection(b)``; also ``a & b``."""
        return self._combine(other, "intersection")

    __or__ = union
    __and__ = intersection

    def jaccard(self, other: "NeuronSet") -> dict[str, float]:
        """Per-emotion Jaccard index |A & B| / |A | B| (1.0 when both are empty).

        Example: ``a.jaccard(a) == {e: 1.0 for e in a.emotions}``.
        """
        self.check_compatible(other)
        inter = einops.reduce((self.masks & other.masks).to(torch.int64), "e l n -> e", "sum").tolist()
        union = einops.reduce((self.masks | other.masks).to(torch.int64), "e l n -> e", "sum").tolist()
        return {e: (i / u if u else 1.0) for e, i, u in zip(self.emotions, inter, union)}

    def overlap_matrix(
        self, other: "NeuronSet", metric: str = "jaccard", *, same_model: bool = True
    ) -> Float64[Tensor, "emotion other_emotion"]:
        """Compare every emotion of this set with every emotion of ``other`` (e.g. another dataset's set).

        ``metric``: "jaccard" (|A&B|/|A|B|, 1.0 for two empty sets), "intersection" (|A&B|) or "overlap"
        (|A&B|/min(|A|,|B|), 1.0 if either is empty). The two sets may have different emotion lists but
        must share site and shape, and model unless ``same_model=False`` (e.g. two fine-tunes of one base).
        Example: ``ns_iemocap.overlap_matrix(ns_meld)[i, j]`` compares IEMOCAP emotion i with MELD emotion j.
        """
        if metric not in OVERLAP_METRICS:
            raise InputError(f"unknown overlap metric {metric!r}; expected one of {list(OVERLAP_METRICS)}")
        self.check_compatible(other, same_emotions=False, same_model=same_model)
        a = einops.rearrange(self.masks, "e l n -> e (l n)").to(torch.float64)
        b = einops.rearrange(other.masks, "e l n -> e (l n)").to(torch.float64)
        inter = einops.einsum(a, b, "e m, f m -> e f")  # exact: counts < 2**53
        if metric == "intersection":
            return inter
        na, nb = a.sum(1)[:, None], b.sum(1)[None, :]
        if metric == "jaccard":
            denom = na + nb - inter
        else:
            denom = torch.minimum(na.expand_as(inter), nb.expand_as(inter))
        return torch.where(denom > 0, inter / denom.clamp(min=1), torch.ones_like(inter))

    # ------------------------------------------------------------------ files
    def _file_meta(self) -> dict[str, Any]:
        return dict(
            emotions=list(self.emotions), selector=self.selector, top_frac=self.top_frac, site=self.site,
            model_fingerprint=self.model_fingerprint, n_layers=self.n_layers, d_mlp=self.d_mlp,
            meta=_jsonable(self.meta),
        )

    def save(self, path: str | Path) -> None:
        """Write to a safetensors file atomically (masks as bool; metadata as JSON).

        Example: ``ns.save("runs/iemocap/mad.safetensors")``.
        """
        save_tensors(path, {"masks": self.masks}, NEURON_SET_KIND, self._file_meta())

    @classmethod
    def load(
        cls, path: str | Path, *, expect_fingerprint: str | None = None, expect_site: str | None = None
    ) -> "NeuronSet":
        """Read a set written by :meth:`save`; refuse a corrupt or foreign file, or a set of another model or site.

        Example: ``NeuronSet.load("mad.safetensors", expect_fingerprint=lens.fingerprint, expect_site="act")``.
        """
        tensors, meta = load_tensors(path, NEURON_SET_KIND)
        required = ("emotions", "selector", "top_frac", "site", "model_fingerprint", "n_layers", "d_mlp")
        missing = [k for k in required if k not in meta]
        if missing or "masks" not in tensors:
            raise CorruptFileError(f"{path}: damaged neuron set file (missing {missing or ['masks']})")
        masks = tensors["masks"]
        shape = (len(meta["emotions"]), int(meta["n_layers"]), int(meta["d_mlp"]))
        if masks.dtype != torch.bool or tuple(masks.shape) != shape:
            raise CorruptFileError(
                f"{path}: damaged neuron set file (masks are {masks.dtype} {tuple(masks.shape)}, expected torch.bool {shape})"
            )
        if meta["site"] not in SITES:
            raise CorruptFileError(f"{path}: damaged neuron set file (unknown site {meta['site']!r})")
        if masks.numel() and int(masks.reshape(-1).view(torch.uint8).max()) > 1:
            raise CorruptFileError(f"{path}: damaged neuron set file (mask bytes other than 0 and 1)")
        _check_budget(path, masks, meta)
        if expect_fingerprint is not None and meta["model_fingerprint"] != expect_fingerprint:
            raise IncompatibleError(
                f"{path}: neuron set was selected on model {meta['model_fingerprint']!r}, not {expect_fingerprint!r}"
            )
        if expect_site is not None and meta["site"] != expect_site:
            raise IncompatibleError(f"{path}: neuron set is for site {meta['site']!r}, not {expect_site!r}")
        return cls(
            masks, tuple(meta["emotions"]), selector=str(meta["selector"]), top_frac=meta["top_frac"],
            site=meta["site"], model_fingerprint=str(meta["model_fingerprint"]), meta=dict(meta.get("meta") or {}),
        )

    # ------------------------------------------------------------------ comparison and display
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NeuronSet):
            return NotImplemented
        return (
            self.emotions == other.emotions and self.site == other.site and self.selector == other.selector
            and self.model_fingerprint == other.model_fingerprint and self.top_frac == other.top_frac
            and self.masks.shape == other.masks.shape and bool(torch.equal(self.masks, other.masks))
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        r = "None" if self.top_frac is None else f"{self.top_frac:g}"
        counts = ", ".join(f"{e}={c}" for e, c in self.counts.items())
        per_layer = self.layer_counts().sum(0)
        top = torch.argsort(-per_layer, stable=True)[: min(3, self.n_layers)].tolist()
        top_s = ", ".join(f"L{l}:{int(per_layer[l])}" for l in top if per_layer[l] > 0) or "-"
        fp = self.model_fingerprint or "?"
        return (
            f"NeuronSet(selector={self.selector!r}, r={r}, site={self.site!r}, model={fp}, "
            f"layers={self.n_layers}, d_mlp={self.d_mlp}; counts: {counts}; top layers: {top_s})"
        )


def _check_budget(path: Any, masks: Tensor, meta: dict[str, Any]) -> None:
    """Refuse a set holding more units than the budget its metadata records (``select`` writes ``meta["budget"]``)."""
    info = meta.get("meta") or {}
    if not isinstance(info, dict) or "budget" not in info:
        return  # a hand-made set: no budget recorded
    budget, per = info["budget"], info.get("per", "global")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 0 or per not in ("global", "layer"):
        raise CorruptFileError(f"{path}: damaged neuron set file (budget {budget!r} per {per!r}; expected a "
                               "non-negative integer per 'global' or 'layer')")
    E, L, N = masks.shape
    top_frac, count = meta.get("top_frac"), info.get("count")
    if count is None and isinstance(top_frac, (int, float)) and not isinstance(top_frac, bool):
        units = L * N if per == "global" else N
        if int(math.floor(float(top_frac) * units + 0.5)) != budget:
            raise CorruptFileError(f"{path}: damaged neuron set file (budget {budget} does not match top_frac "
                                   f"{top_frac} of {units} units)")
    counts = masks.sum(dim=(1, 2)) if per == "global" else masks.sum(dim=2).amax(dim=1)
    over = [(e, int(c)) for e, c in zip(meta["emotions"], counts.tolist()) if c > budget]
    if over:
        where = "" if per == "global" else " in one layer"
        raise CorruptFileError(f"{path}: damaged neuron set file (units{where} per emotion "
                               f"{', '.join(f'{e}={c}' for e, c in over)} exceed the recorded budget {budget})")


__all__ = ["NeuronSet", "SITES", "OVERLAP_METRICS", "NEURON_SET_KIND"]
