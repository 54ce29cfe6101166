"""Running top-k activations of chosen units: the (clip, position) pairs that make each unit fire most, its
per-emotion histogram of values, and the activation profile of each top clip, with bounded memory.

:class:`TopActivations` is a recorder like :meth:`NeuronStats.record <esn_lens.stats.NeuronStats.record>`: inside
``with lens.trace(batch):`` call ``top.record(lens, batch, clip_index)``; each layer's hook reduces the batch to
at most ``k`` candidates per unit (one batched sort; no loop over units) and merges them into the running state.
Memory is ``units x k`` entries (+ ``units x k x positions`` for the top clips' profiles) + ``emotion x units x
bins`` histogram counts, whatever the corpus size. No per-token tensor is kept beyond the batch.

Ranking (exact, total, the same in one pass, over shards merged in any order, and after resume): a larger value
ranks first; equal values rank by the smaller clip index (the clip's place in the stream), then by the smaller
position (the token's index among the clip's non-padding tokens). Only the counted positions (``positions``, as
the statistics count them) compete. Histograms bin each value into ``bins`` equal bins between the unit's
``lo`` and ``hi`` (values outside fall into the end bins), so shards with the same edges add exactly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from jaxtyping import Bool, Float, Int64
from torch import Tensor

from .errors import IncompatibleError, InputError

#: the clip index of an empty slot (ranks after every real entry)
EMPTY = torch.iinfo(torch.int64).max


def parse_units(units: Any) -> Int64[Tensor, "unit 2"]:
    """``(layer, neuron)`` rows from ``"L:N"`` strings, pairs, an (n, 2) tensor or a boolean (layer, neuron) mask."""
    if isinstance(units, Tensor) and units.dtype == torch.bool:
        return units.nonzero().to(torch.int64)
    if isinstance(units, Tensor):
        t = units.to(torch.int64).reshape(-1, 2)
    else:
        rows = []
        for u in units:
            if isinstance(u, str):
                parts = u.split(":")
                if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
                    raise InputError(f"unit {u!r}: expected LAYER:NEURON, e.g. 3:117")
                rows.append((int(parts[0]), int(parts[1])))
            else:
                layer, neuron = u
                rows.append((int(layer), int(neuron)))
        t = torch.tensor(rows, dtype=torch.int64).reshape(-1, 2)
    if t.shape[0] == 0:
        raise InputError("top activations: no units given")
    return t


def _lexsort(values: Tensor, clip: Tensor, pos: Tensor) -> Tensor:
    """Per row, the order (value desc, clip asc, pos asc): three stable sorts, last key first."""
    order = torch.sort(pos, dim=-1, stable=True).indices
    order = order.gather(-1, torch.sort(clip.gather(-1, order), dim=-1, stable=True).indices)
    v = values.gather(-1, order)
    return order.gather(-1, torch.sort(v, dim=-1, descending=True, stable=True).indices)


def compact(x: Tensor, padding: Bool[Tensor, "batch pos"]) -> tuple[Tensor, Int64[Tensor, "batch pos"]]:
    """Move each row's non-padding positions to the front (left or right padding alike); returns the gathered
    ``x`` (batch, pos, ...) and the source index of each compacted position."""
    src = torch.sort(padding.to(torch.int8), dim=1, stable=True).indices
    idx = src.to(x.device)
    shape = idx.shape + (1,) * (x.dim() - 2)
    return x.gather(1, idx.reshape(shape).expand(*idx.shape, *x.shape[2:])), src


@dataclass
class TopActivations:
    """Running top-k (clip, position) pairs, per-emotion histograms and top clips' profiles of ``units``.

    Example::

        top = TopActivations(units=[(1, 7), (3, 2)], emotions=("angry", "sad"), k=5, lo=-1.0, hi=3.0)
        with lens.trace(batch):
            top.record(lens, batch, clip_index=torch.arange(batch.size))
        top.values[0], top.clips[0], top.positions[0]    # unit (1, 7)'s top 5, best first
    """

    units: Any
    emotions: tuple[str, ...]
    k: int = 8
    lo: Any = -1.0
    hi: Any = 1.0
    bins: int = 24
    site: str = "act"
    positions_set: str = "valid"
    model_fingerprint: str = ""

    def __post_init__(self) -> None:
        self.units = parse_units(self.units)
        self.emotions = tuple(self.emotions)
        U = self.units.shape[0]
        if self.k < 1 or self.bins < 1:
            raise InputError(f"top activations: k and bins must be >= 1, got k={self.k}, bins={self.bins}")
        self.lo = torch.as_tensor(self.lo, dtype=torch.float32).expand(U).clone()
        self.hi = torch.as_tensor(self.hi, dtype=torch.float32).expand(U).clone()
        if bool((self.hi <= self.lo).any()):
            raise InputError("top activations: every unit needs hi > lo for its histogram")
        self.values = torch.full((U, self.k), float("-inf"))
        self.clips = torch.full((U, self.k), EMPTY, dtype=torch.int64)
        self.positions = torch.full((U, self.k), -1, dtype=torch.int64)
        self.profiles = torch.full((U, self.k, 0), float("nan"))
        self.hist = torch.zeros(len(self.emotions), U, self.bins, dtype=torch.float64)

    # ------------------------------------------------------------------ accumulation
    def _layer_columns(self, layer: int) -> Int64[Tensor, " cols"]:
        return (self.units[:, 0] == layer).nonzero().flatten()

    def add_layer(self, layer: int, acts: Float[Tensor, "batch pos neuron"], counted: Bool[Tensor, "batch pos"],
                  padding: Bool[Tensor, "batch pos"], clip_index: Int64[Tensor, " batch"],
                  emotion_index: Int64[Tensor, " batch"]) -> None:
        """Merge one layer's values of a batch (rows = clips ``clip_index``) into the units of that layer."""
        cols = self._layer_columns(layer)
        if cols.numel() == 0:
            return
        dev = acts.device  # the batch is reduced where the model runs; only (unit, k) candidates come back
        v = acts.detach()[..., self.units[cols, 1].to(dev)].to(torch.float32)  # (B, P, u)
        padding = padding.to(dev)
        v, _ = compact(v, padding)
        cnt, _ = compact(counted.to(dev), padding)
        B, P, u = v.shape
        cnt = cnt & ~torch.isnan(v).any(-1)
        clip_index, emotion_index = clip_index.to(dev), emotion_index.to(dev)
        self._add_hist(cols, v, cnt, emotion_index)
        # candidates: every counted (row, pos) of each unit, in (clip, pos) order, best k by the documented ranking
        order = torch.argsort(clip_index, stable=True)
        vs, cs = v[order], cnt[order]
        flat = vs.permute(2, 0, 1).reshape(u, B * P)
        ok = cs.reshape(1, B * P).expand(u, -1)
        clip_of = clip_index[order].repeat_interleave(P).expand(u, -1)
        pos_of = torch.arange(P, device=dev).repeat(B).expand(u, -1)
        keyed = torch.where(ok, flat, torch.full_like(flat, float("-inf")))
        top = torch.sort(keyed, dim=1, descending=True, stable=True).indices[:, : self.k]
        n_ok = ok.gather(1, top)
        cand_v = keyed.gather(1, top)
        cand_c = torch.where(n_ok, clip_of.gather(1, top), torch.full_like(top, EMPTY))
        cand_p = torch.where(n_ok, pos_of.gather(1, top), torch.full_like(top, -1))
        rows = order[torch.div(top, P, rounding_mode="floor")]  # (u, k) batch row of each candidate
        prof = v.permute(2, 0, 1)[torch.arange(u, device=dev)[:, None], rows]  # (u, k, P)
        nonpad = (~padding).sum(1)[rows]  # (u, k) row lengths
        nan = torch.full_like(prof, float("nan"))
        prof = torch.where((torch.arange(P, device=dev)[None, None, :] < nonpad[..., None]) & n_ok[..., None], prof, nan)
        self._merge(cols, cand_v.cpu(), cand_c.cpu(), cand_p.cpu(), prof.cpu())

    def _add_hist(self, cols: Tensor, v: Tensor, cnt: Tensor, emotion_index: Tensor) -> None:
        dev = v.device
        lo, hi = self.lo[cols].to(dev), self.hi[cols].to(dev)
        b = ((v - lo) / (hi - lo) * self.bins).floor().clamp(0, self.bins - 1).to(torch.int64)  # (B, P, u)
        u = cols.numel()
        e = emotion_index.to(torch.int64).view(-1, 1, 1).expand_as(b)
        flat = (e * u + torch.arange(u, device=dev).view(1, 1, -1)) * self.bins + b
        hits = flat[cnt].reshape(-1)  # (counted positions x u)
        counts = torch.bincount(hits, minlength=len(self.emotions) * u * self.bins)
        self.hist[:, cols] += counts.cpu().to(torch.float64).view(len(self.emotions), u, self.bins)

    def _merge(self, cols: Tensor, v: Tensor, c: Tensor, p: Tensor, prof: Tensor) -> None:
        """Keep the best ``k`` of the running entries of ``cols`` and the candidates (documented ranking)."""
        width = max(self.profiles.shape[2], prof.shape[2])
        self._widen(width)
        prof = torch.nn.functional.pad(prof, (0, width - prof.shape[2]), value=float("nan"))
        allv = torch.cat([self.values[cols], v], 1)
        allc = torch.cat([self.clips[cols], c], 1)
        allp = torch.cat([self.positions[cols], p], 1)
        allprof = torch.cat([self.profiles[cols], prof], 1)
        keep = _lexsort(allv, allc, allp)[:, : self.k]
        self.values[cols] = allv.gather(1, keep)
        self.clips[cols] = allc.gather(1, keep)
        self.positions[cols] = allp.gather(1, keep)
        self.profiles[cols] = allprof.gather(1, keep[..., None].expand(-1, -1, width))

    def _widen(self, width: int) -> None:
        if width > self.profiles.shape[2]:
            self.profiles = torch.nn.functional.pad(self.profiles, (0, width - self.profiles.shape[2]),
                                                    value=float("nan"))

    def record(self, lens: Any, batch: Any = None, clip_index: Int64[Tensor, " batch"] | None = None,
               emotion_index: Int64[Tensor, " batch"] | None = None) -> None:
        """Accumulate this batch inside ``with lens.trace(batch):`` (prefill values at :attr:`site`).

        ``clip_index``: each row's global clip index (the tie-break; default 0..batch-1); ``emotion_index``
        defaults to the batch's labels."""
        lens.attach(lambda model, scope: self.hooks(model, scope, clip_index, emotion_index), batch)

    def hooks(self, model: Any, scope: Any, clip_index: Int64[Tensor, " batch"] | None = None,
              emotion_index: Int64[Tensor, " batch"] | None = None) -> list[tuple[Any, Any]]:
        """The ``(site, fn)`` pairs that merge ``scope``'s rows into this state at the prefill, one per layer holding
        units (what :meth:`record` attaches)."""
        b = scope.need_batch("top activations")
        n = scope.size
        clip_index = torch.arange(n) if clip_index is None else torch.as_tensor(clip_index, dtype=torch.int64).cpu()
        if emotion_index is None:
            if b.labels is None:
                raise InputError("top activations: the batch has no labels; pass emotion_index (one index per row)")
            idx = {e: i for i, e in enumerate(self.emotions)}
            bad = sorted({l for l in b.labels if l not in idx})
            if bad:
                raise InputError(f"top activations: unknown emotion label(s) {bad}; expected one of {list(self.emotions)}")
            emotion_index = torch.tensor([idx[l] for l in b.labels], dtype=torch.int64)
        if clip_index.shape[0] != n or emotion_index.shape[0] != n:
            raise InputError(f"top activations: {clip_index.shape[0]} clip / {emotion_index.shape[0]} emotion indices "
                             f"for a batch of {n} rows")
        counted, padding = b.masks.select(self.positions_set), b.masks.padding
        out = []
        for layer in sorted(set(self.units[:, 0].tolist())):
            done = [False]

            def fn(value: Tensor, layer: int = layer, done: list = done) -> None:
                if not done[0]:  # prefill only
                    done[0] = True
                    with torch.inference_mode(False):  # the running state stays a normal tensor
                        self.add_layer(layer, scope.rows(value), counted, padding, clip_index, emotion_index)
                return None

            out.append((model.blocks[layer].mlp.site(self.site), fn))
        return out

    # ------------------------------------------------------------------ merging and files
    def _meta(self) -> dict[str, Any]:
        return dict(emotions=list(self.emotions), k=self.k, bins=self.bins, site=self.site,
                    positions_set=self.positions_set, model_fingerprint=self.model_fingerprint)

    def check_compatible(self, other: "TopActivations") -> None:
        for name in ("emotions", "k", "bins", "site", "positions_set", "model_fingerprint"):
            if getattr(self, name) != getattr(other, name):
                raise IncompatibleError(f"cannot merge top activations: {name} differs "
                                        f"({getattr(self, name)!r} vs {getattr(other, name)!r})")
        for name in ("units", "lo", "hi"):
            if not torch.equal(getattr(self, name), getattr(other, name)):
                raise IncompatibleError(f"cannot merge top activations: {name} differ")

    def merge(self, other: "TopActivations") -> "TopActivations":
        """Add ``other`` (another shard or batch range, same units and edges) into this one, in place."""
        self.check_compatible(other)
        self.hist += other.hist
        self._merge(torch.arange(self.units.shape[0]), other.values, other.clips, other.positions, other.profiles)
        return self

    def state_dict(self) -> dict[str, Any]:
        """Tensors and metadata, enough to rebuild this state (see :meth:`from_state_dict`)."""
        return {"meta": self._meta(), **{n: getattr(self, n).clone() for n in TENSORS}}

    def load_state_dict(self, state: dict[str, Any]) -> "TopActivations":
        """Restore from :meth:`state_dict` (refusing other units, edges or settings)."""
        other = TopActivations.from_state_dict(state)
        self.check_compatible(other)
        for n in TENSORS:
            setattr(self, n, getattr(other, n).clone())
        return self

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> "TopActivations":
        t = cls(state["units"], lo=state["lo"], hi=state["hi"], **{
            k: (tuple(v) if k == "emotions" else v) for k, v in state["meta"].items()})
        for n in TENSORS:
            setattr(t, n, state[n].clone())
        return t

    # ------------------------------------------------------------------ reading
    def unit_row(self, layer: int, neuron: int) -> int:
        hit = ((self.units[:, 0] == layer) & (self.units[:, 1] == neuron)).nonzero().flatten()
        if hit.numel() == 0:
            raise InputError(f"unit {layer}:{neuron} is not among these top activations' units")
        return int(hit[0])

    def entries(self, layer: int, neuron: int) -> list[dict[str, Any]]:
        """The unit's top entries, best first: ``{"value", "clip", "position"}`` (empty slots left out)."""
        r = self.unit_row(layer, neuron)
        return [{"value": float(v), "clip": int(c), "position": int(p)} for v, c, p in
                zip(self.values[r].tolist(), self.clips[r].tolist(), self.positions[r].tolist()) if c != EMPTY]

    def __repr__(self) -> str:
        return (f"TopActivations(units={self.units.shape[0]}, k={self.k}, bins={self.bins}, site={self.site!r}, "
                f"counted={int(self.hist[:, 0].sum())} tokens per unit)")


TENSORS = ("units", "lo", "hi", "values", "clips", "positions", "profiles", "hist")


def edges_from_stats(stats: Any, units: Int64[Tensor, "unit 2"], width: float = 4.0) -> tuple[Tensor, Tensor]:
    """Histogram edges per unit from running statistics: the widest of ``mean +- width * std`` over emotions."""
    m = stats.mean[:, units[:, 0], units[:, 1]]
    s = stats.var[:, units[:, 0], units[:, 1]].sqrt()
    lo = (m - width * s).min(0).values.float()
    hi = (m + width * s).max(0).values.float()
    hi = torch.maximum(hi, lo + 1e-6)
    return lo, hi


__all__ = ["TopActivations", "parse_units", "edges_from_stats", "EMPTY"]
