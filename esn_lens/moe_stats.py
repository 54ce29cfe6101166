"""Routing-aware statistics of mixture-of-experts models: per-unit token counts, router statistics, expert selectors.

* :func:`~esn_lens.moe.route_count_hooks` (re-exported) -- what :meth:`NeuronStats.hooks` adds for routed stats:
  each unit's T counts the counted tokens routed to its expert (a unit never routed for an emotion has T = 0).
* :class:`RouterStats` -- per-emotion routing frequency and mean router probability of every (layer, expert).
* :data:`EXPERT_SELECTORS` -- emotion-sensitive experts from router statistics (``"lape"``: LAPE over the routing
  frequencies, ``"freq_diff"``: one-vs-rest frequency difference); :func:`find_experts` picks the top fraction.
* :func:`expert_units` -- the (layer, unit) mask of whole experts, to deactivate or steer an expert like any units.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import einops
import torch
from jaxtyping import Bool, Float64, Int64
from torch import Tensor

from .errors import IncompatibleError, InputError
from .io import load_tensors, save_tensors
from .registry import Registry
from .moe import _block, attach_op, route_count_hooks, route_site, scope_batch  # noqa: F401
from .stats import emotion_weights

ROUTER_KIND = "router_stats"


@dataclass
class RouterStats:
    """Per-emotion routing statistics of every (layer, expert): ``counts`` (tokens routed to it), ``prob_sum``
    (sum of its router probability), ``tokens`` (counted tokens per emotion), ``n_clips``.

    Example (``lens`` wraps a MoE model): ``rs = RouterStats.for_lens(lens, ("angry", "happy"))``, then
    ``with lens.trace(batch): rs.record(lens)``; ``rs.frequency`` is (emotion, layer, expert), the share of the
    emotion's tokens routed to the expert (tutorial 07).
    """

    emotions: tuple[str, ...]
    n_layers: int
    n_experts: int
    top_k: int
    positions: str = "valid"
    model_fingerprint: str = ""
    counts: Tensor = field(init=False, repr=False)
    prob_sum: Tensor = field(init=False, repr=False)
    tokens: Tensor = field(init=False, repr=False)
    n_clips: Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.emotions = tuple(self.emotions)
        if not self.emotions or len(set(self.emotions)) != len(self.emotions):
            raise InputError(f"emotions must be distinct and non-empty, got {self.emotions}")
        E, L, X = len(self.emotions), self.n_layers, self.n_experts
        self.counts = torch.zeros(E, L, X, dtype=torch.float64)
        self.prob_sum = torch.zeros(E, L, X, dtype=torch.float64)
        self.tokens = torch.zeros(E, dtype=torch.float64)
        self.n_clips = torch.zeros(E, dtype=torch.float64)

    @classmethod
    def for_lens(cls, lens: Any, emotions: Sequence[str], positions: str = "valid") -> "RouterStats":
        """Empty router statistics shaped and fingerprinted for a MoE model's lens."""
        a = lens.adapter
        if not getattr(a, "routed", False):
            raise InputError(f"{a.name}: not a mixture-of-experts model (no router to record)")
        return cls(tuple(emotions), lens.n_layers, a.n_experts, a.top_k, positions, lens.fingerprint)

    def emotion_index(self, labels: Sequence[str]) -> Int64[Tensor, " batch"]:
        idx = {e: i for i, e in enumerate(self.emotions)}
        bad = sorted({l for l in labels if l not in idx})
        if bad:
            raise InputError(f"unknown emotion label(s) {bad}; expected one of {list(self.emotions)}")
        return torch.tensor([idx[l] for l in labels], dtype=torch.long)

    def add_layer(self, layer: int, routed: Bool[Tensor, "batch pos expert"], probs: Tensor, weights: Tensor) -> None:
        """Accumulate one layer's routing mask and router probabilities over the weighted (counted) positions."""
        w = weights.to(device=routed.device, dtype=torch.float64)
        self.counts[:, layer] += torch.einsum("bpx,bpe->ex", routed.to(torch.float64), w).cpu()
        self.prob_sum[:, layer] += torch.einsum("bpx,bpe->ex", probs.detach().to(torch.float64), w).cpu()

    def record(self, lens: Any, batch: Any = None, emotion_index: Tensor | None = None, *,
               positions: str | None = None) -> None:
        """Accumulate this batch's routing from inside ``with lens.trace(batch):`` (every layer, prefill only)."""
        if lens.fingerprint != self.model_fingerprint and self.model_fingerprint:
            raise IncompatibleError(f"router stats were recorded from model {self.model_fingerprint!r}, this model "
                                    f"is {lens.fingerprint!r}")
        attach_op(lens, lambda model, scope: self.hooks(model, scope, emotion_index, positions=positions), batch)

    def hooks(self, model: Any, scope: Any, emotion_index: Tensor | None = None, *,
              positions: str | None = None) -> list[tuple[Any, Any]]:
        """The ``(site, fn)`` hooks accumulating ``scope``'s rows at every layer's router site (prefill only); the
        batch's tokens are counted when layer 0's value arrives."""
        from .moe import routed_mask

        b = scope_batch(scope, "RouterStats.record")
        if emotion_index is None:
            if b.labels is None:
                raise InputError("RouterStats.record: the batch has no labels; pass emotion_index (one per row)")
            emotion_index = self.emotion_index(b.labels)
        if emotion_index.shape[0] != scope.size:
            raise InputError(f"RouterStats.record: {emotion_index.shape[0]} emotion indices for a batch of "
                             f"{scope.size} rows")
        weights = emotion_weights(emotion_index, b.masks.select(positions or self.positions), len(self.emotions))
        out = []
        for layer in range(self.n_layers):
            done = [False]
            block = _block(model, layer)

            def fn(probs: Tensor, layer: int = layer, done: list = done, block: Any = block) -> None:
                if not done[0]:
                    done[0] = True
                    if layer == 0:
                        self.tokens += einops.reduce(weights.to(torch.float64), "b p e -> e", "sum")
                        self.n_clips += einops.reduce((weights.sum(1) > 0).to(torch.float64), "b e -> e", "sum")
                    self.add_layer(layer, scope.rows(routed_mask(block)), scope.rows(probs), weights)
                return None

            out.append((route_site(model, layer, "router"), fn))
        return out

    def _require_tokens(self) -> Tensor:
        empty = [e for e, t in zip(self.emotions, self.tokens.tolist()) if t == 0]
        if empty:
            raise InputError(f"no counted tokens for emotion(s) {empty}: record clips of every emotion first")
        return self.tokens[:, None, None]

    @property
    def frequency(self) -> Float64[Tensor, "emotion layer expert"]:
        """Share of each emotion's counted tokens routed to the expert (sums to top_k over experts)."""
        return self.counts / self._require_tokens()

    @property
    def mean_prob(self) -> Float64[Tensor, "emotion layer expert"]:
        """Mean router probability of the expert over each emotion's counted tokens (sums to 1 over experts)."""
        return self.prob_sum / self._require_tokens()

    def merge(self, other: "RouterStats") -> "RouterStats":
        """Add ``other``'s sums into these (same emotions, shape and model)."""
        for n in ("emotions", "n_layers", "n_experts", "top_k", "positions", "model_fingerprint"):
            if getattr(self, n) != getattr(other, n):
                raise IncompatibleError(f"cannot combine router stats: {n} differs")
        for n in ("counts", "prob_sum", "tokens", "n_clips"):
            getattr(self, n).add_(getattr(other, n))
        return self

    def save(self, path: str | Path) -> None:
        """Write to a safetensors file (atomic)."""
        meta = dict(emotions=list(self.emotions), n_layers=self.n_layers, n_experts=self.n_experts, top_k=self.top_k,
                    positions=self.positions, model_fingerprint=self.model_fingerprint)
        save_tensors(path, {n: getattr(self, n) for n in ("counts", "prob_sum", "tokens", "n_clips")}, ROUTER_KIND, meta)

    @classmethod
    def load(cls, path: str | Path) -> "RouterStats":
        """Read router statistics written by :meth:`save`."""
        tensors, meta = load_tensors(path, ROUTER_KIND)
        s = cls(tuple(meta["emotions"]), int(meta["n_layers"]), int(meta["n_experts"]), int(meta["top_k"]),
                meta.get("positions", "valid"), meta.get("model_fingerprint", ""))
        for n in ("counts", "prob_sum", "tokens", "n_clips"):
            if tuple(tensors[n].shape) != tuple(getattr(s, n).shape):
                raise IncompatibleError(f"{path}: router tensor {n} has shape {tuple(tensors[n].shape)}")
            getattr(s, n).copy_(tensors[n].to(torch.float64))
        return s


# ---------------------------------------------------------------------- emotion-sensitive experts
EXPERT_SELECTORS: Registry[Callable[..., Tensor]] = Registry("expert selector")


@EXPERT_SELECTORS.register("lape")
def lape_experts(rs: RouterStats, *, on: str = "frequency") -> Float64[Tensor, "emotion layer expert"]:
    """LAPE over routing: ``p_e = F_e / sum_e' F_e'`` of the expert's routing frequency (``on="frequency"``) or mean
    router probability (``on="prob"``); ``score = -H(p)`` for the expert's argmax emotion (first on ties), ``-inf``
    for the others and for experts never routed."""
    F = _profile(rs, on)
    tot = F.sum(0)
    eligible = tot > 0
    p = F / torch.where(eligible, tot, torch.ones_like(tot))
    neg_h = torch.xlogy(p, p).sum(0)
    is_max = F == F.amax(0, keepdim=True)
    top = is_max & (is_max.cumsum(0) == 1)
    return torch.where(top & eligible[None], neg_h[None], torch.tensor(float("-inf"), dtype=F.dtype))


@EXPERT_SELECTORS.register("freq_diff")
def freq_diff_experts(rs: RouterStats, *, on: str = "frequency") -> Float64[Tensor, "emotion layer expert"]:
    """One-vs-rest difference of the routing profile: ``F_e - mean_{e' != e} F_e'`` (``F_e`` with one emotion)."""
    F = _profile(rs, on)
    E = F.shape[0]
    if E == 1:
        return F.clone()
    return F - (F.sum(0, keepdim=True) - F) / (E - 1)


def _profile(rs: RouterStats, on: str) -> Tensor:
    if on not in ("frequency", "prob"):
        raise InputError(f"expert selector: on must be 'frequency' or 'prob', got {on!r}")
    return rs.frequency if on == "frequency" else rs.mean_prob


def find_experts(rs: RouterStats, selector: str = "lape", *, top_frac: float = 0.1,
                 **options: Any) -> Bool[Tensor, "emotion layer expert"]:
    """Each emotion's top ``top_frac`` of all (layer, expert) pairs by the selector's score (finite scores only,
    ties to the lower index); e.g. ``find_experts(rs, "lape", top_frac=0.25)[0]`` is emotion 0's experts."""
    if not 0 < float(top_frac) <= 1:
        raise InputError(f"top_frac must be in (0, 1], got {top_frac}")
    scores = EXPERT_SELECTORS.get(selector)(rs, **options)
    E, L, X = scores.shape
    k = max(1, int(round(float(top_frac) * L * X)))
    flat = scores.reshape(E, L * X)
    order = torch.sort(-flat, dim=1, stable=True).indices[:, :k]
    masks = torch.zeros(E, L * X, dtype=torch.bool)
    masks.scatter_(1, order, True)
    return (masks & torch.isfinite(flat)).reshape(E, L, X)


def expert_units(experts: Bool[Tensor, "layer expert"], d_expert: int) -> Bool[Tensor, "layer unit"]:
    """The (layer, unit) mask of every neuron of the chosen experts (units ``expert * d_expert + neuron``)."""
    return experts.to(torch.bool).repeat_interleave(int(d_expert), dim=-1)
