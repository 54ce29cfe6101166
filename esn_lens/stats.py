"""Streaming, mergeable per-emotion statistics of every MLP neuron (baukit-style running stats).

For each emotion ``e``, layer ``l`` and neuron ``n`` over the counted token positions:

* ``K[e, l, n]``  -- firing count: tokens with value > 0 (the paper's K_e(n)),
* ``T``           -- number of counted tokens (the paper's T_e): shape (emotion, 1, 1) for a dense model (one count
  per emotion, broadcast over units); for a mixture-of-experts model (``routed=True``) shape (emotion, layer, neuron),
  the counted tokens routed to each unit's expert. ``stats.T`` broadcasts against ``stats.K`` in both cases;
  ``stats.tokens`` (emotion,) is the number of counted tokens per emotion,
* ``sum``, ``sumsq`` -- float64 sums of the value and of its square.

Activations are reduced batch by batch with one einsum each; no per-token tensor is kept.
Statistics from shards merge exactly (they are sums).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import einops
import torch
from jaxtyping import Bool, Float, Float64, Int64
from torch import Tensor

from .errors import IncompatibleError, InputError
from .io import load_tensors, save_tensors
from .stats_files import checked_file_stats
from .vocab import SITES, fingerprint_of  # noqa: F401  (fingerprint_of: kept importable from here)

STATS_KIND = "neuron_stats"


def emotion_weights(
    emotion_index: Int64[Tensor, " batch"], mask: Bool[Tensor, "batch pos"], n_emotions: int
) -> Float[Tensor, "batch pos emotion"]:
    """One-hot weights of each counted position for its row's emotion (0 where not counted).

    Example: ``emotion_weights(torch.tensor([1]), torch.ones(1, 3, dtype=torch.bool), 2)[0, :, 1] == 1``.
    """
    if emotion_index.numel() and (int(emotion_index.min()) < 0 or int(emotion_index.max()) >= n_emotions):
        raise InputError(f"emotion index out of range: expected 0..{n_emotions - 1}, got {emotion_index.tolist()}")
    onehot = torch.nn.functional.one_hot(emotion_index.long(), n_emotions).to(torch.float32)
    return mask.to(torch.float32).unsqueeze(-1) * onehot.unsqueeze(1)


def reduce_site(
    acts: Float[Tensor, "batch pos neuron"], weights: Float[Tensor, "batch pos emotion"]
) -> tuple[Float64[Tensor, "emotion neuron"], Float64[Tensor, "emotion neuron"], Float64[Tensor, "emotion neuron"]]:
    """The one reduction kernel: per-emotion firing counts, sums and sums of squares of one layer's site.

    ``weights`` are one-hot rows times a position mask, as :func:`emotion_weights` builds them (each row belongs to
    one emotion). Each row's counted positions are reduced by a float32 batched matmul against the row's mask (exact
    for the integer counts; for sums a relative error of about 1e-7, the float32 rounding of one row's few hundred
    terms), then rows are added into their emotions by a float64 matmul with the rows' one-hot emotions, and the
    running totals across batches are float64: precision does not degrade with corpus size. Reducing rows against
    their own mask (not against all E emotions' weights) costs 1/E of the matmul work.
    Returns ``(k, s, ss)``, each (emotion, neuron).
    """
    a = acts.detach()
    w = weights.to(device=a.device, dtype=torch.float32)
    mask = w.sum(2).unsqueeze(1)  # (batch, 1, pos): the row's counted positions
    rows_to_emotions = (w.sum(1) > 0).to(torch.float64).T  # (emotion, batch)
    fires = torch.sign(a).clamp_(min=0).to(torch.float32)  # 1.0 where a > 0 (faster than (a > 0).float())
    if a.dtype != torch.float32:
        a = a.to(torch.float32)
    per_row = torch.cat([torch.bmm(mask, fires), torch.bmm(mask, a), torch.bmm(mask, a * a)], 1)  # (batch, 3, neuron)
    k, s, ss = torch.einsum("eb,bkn->ekn", rows_to_emotions, per_row.to(torch.float64)).unbind(1)
    return k, s, ss


@dataclass
class UnitStats:
    """What every per-emotion table of (layer, neuron) units shares: its units, site, positions and model, checked.

    :class:`NeuronStats` (firing statistics) and :class:`~esn_lens.attribution.AttributionStats` build on it.
    """

    emotions: tuple[str, ...]
    n_layers: int
    d_mlp: int
    site: str = "act"
    positions: str = "valid"
    model_fingerprint: str = ""
    adapter: str = ""

    def __post_init__(self) -> None:
        self.emotions = tuple(self.emotions)
        if len(self.emotions) == 0 or len(set(self.emotions)) != len(self.emotions):
            raise InputError(f"emotions must be distinct and non-empty, got {self.emotions}")
        if self.n_layers <= 0 or self.d_mlp <= 0:
            raise InputError(f"n_layers and d_mlp must be positive, got {self.n_layers}, {self.d_mlp}")

    @property
    def shape(self) -> tuple[int, int, int]:
        """(emotion, layer, neuron)."""
        return (len(self.emotions), self.n_layers, self.d_mlp)

    def emotion_index(self, labels: Sequence[str]) -> Int64[Tensor, " batch"]:
        """Map emotion labels to indices, refusing unknown labels with the known set."""
        idx = {e: i for i, e in enumerate(self.emotions)}
        bad = [l for l in labels if l not in idx]
        if bad:
            raise InputError(f"unknown emotion label(s) {sorted(set(bad))}; expected one of {list(self.emotions)}")
        return torch.tensor([idx[l] for l in labels], dtype=torch.long)

    def check_compatible(self, other: "UnitStats") -> None:
        """Raise :class:`IncompatibleError` unless ``other`` describes the same units."""
        for name in ("emotions", "n_layers", "d_mlp", "site", "positions", "model_fingerprint"):
            a, b = getattr(self, name), getattr(other, name)
            if a != b:
                raise IncompatibleError(f"cannot combine stats: {name} differs ({a!r} vs {b!r})")


@dataclass
class NeuronStats(UnitStats):
    """Running per-emotion statistics of (layer, neuron) units at one MLP site.

    Example::

        stats = NeuronStats(("angry", "happy"), n_layers=2, d_mlp=8)
        acts = torch.randn(2, 3, 5, 8)           # (layer, batch, pos, neuron)
        stats.add(acts, torch.tensor([0, 1, 1]), torch.ones(3, 5, dtype=torch.bool))
        stats.firing_rate                         # P_e(n), shape (emotion, layer, neuron)
    """

    device: str | torch.device = "cpu"
    #: a mixture-of-experts model's units: each unit counts only the tokens routed to its expert (per-unit T)
    routed: bool = False
    K: Tensor = field(init=False, repr=False)
    T: Tensor = field(init=False, repr=False)
    sum: Tensor = field(init=False, repr=False)
    sumsq: Tensor = field(init=False, repr=False)
    n_clips: Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        E, L, N = len(self.emotions), self.n_layers, self.d_mlp
        z = dict(device=self.device, dtype=torch.float64)
        self.K = torch.zeros(E, L, N, **z)
        self.T = torch.zeros(E, L, N, **z) if self.routed else torch.zeros(E, 1, 1, **z)
        self.sum = torch.zeros(E, L, N, **z)
        self.sumsq = torch.zeros(E, L, N, **z)
        self.n_clips = torch.zeros(E, **z)
        self.n_tokens = torch.zeros(E, **z)

    def tensor_names(self) -> tuple[str, ...]:
        """The names of the summed tensors (what merging, saving and all-reducing add up)."""
        return ("K", "T", "sum", "sumsq", "n_clips") + (("n_tokens",) if self.routed else ())

    @property
    def tokens(self) -> Float64[Tensor, " emotion"]:
        """Counted tokens per emotion (for a dense model the same count as ``T``)."""
        return self.n_tokens if self.routed else self.T.reshape(-1)

    # ------------------------------------------------------------------ accumulation
    def add_layer(self, layer: int, acts: Float[Tensor, "batch pos neuron"], weights: Float[Tensor, "batch pos emotion"]) -> None:
        """Accumulate one layer's site values; call :meth:`add_tokens` once per batch for T."""
        if not 0 <= layer < self.n_layers:
            raise InputError(f"layer {layer} out of range 0..{self.n_layers - 1}")
        if acts.shape[-1] != self.d_mlp:
            raise InputError(f"activations have {acts.shape[-1]} neurons, these stats expect d_mlp={self.d_mlp}")
        k, s, ss = reduce_site(acts, weights)
        dev = self.K.device
        self.K[:, layer] += k.to(dev)
        self.sum[:, layer] += s.to(dev)
        self.sumsq[:, layer] += ss.to(dev)

    def add_tokens(self, weights: Float[Tensor, "batch pos emotion"]) -> None:
        """Count the batch's counted tokens (T) and clips per emotion."""
        w = weights.to(device=self.T.device, dtype=torch.float64)
        per_emotion = einops.reduce(w, "b p e -> e", "sum")
        self.n_tokens += per_emotion
        if not self.routed:
            self.T += per_emotion.view(self.T.shape) if self.T.ndim == 3 else per_emotion
        self.n_clips += einops.reduce((w.sum(1) > 0).to(torch.float64), "b e -> e", "sum")

    def add_route(self, layer: int, routed: Bool[Tensor, "batch pos expert"],
                  weights: Float[Tensor, "batch pos emotion"]) -> None:
        """Count, per emotion, the counted tokens routed to each expert of ``layer`` into its units' T."""
        if not self.routed:
            raise InputError("add_route: these stats are for a dense model (routed=False)")
        X = routed.shape[-1]
        if self.d_mlp % X:
            raise InputError(f"add_route: {X} experts do not divide d_mlp={self.d_mlp}")
        w = weights.to(device=routed.device, dtype=torch.float64)
        per_expert = torch.einsum("bpx,bpe->ex", routed.to(torch.float64), w)
        self.T[:, layer] += per_expert.repeat_interleave(self.d_mlp // X, dim=1).to(self.T.device)

    def add(
        self,
        acts: Float[Tensor, "layer batch pos neuron"],
        emotion_index: Int64[Tensor, " batch"],
        mask: Bool[Tensor, "batch pos"],
    ) -> None:
        """Accumulate a batch of all layers' site values (a convenience over :meth:`add_layer`)."""
        if acts.shape[0] != self.n_layers:
            raise InputError(f"activations have {acts.shape[0]} layers, these stats expect {self.n_layers}")
        if self.routed:
            raise InputError("NeuronStats.add takes a dense model's activations; routed stats count routed tokens "
                             "per unit: record them inside a trace (stats.record(lens)) or use add_layer + add_route")
        w = emotion_weights(emotion_index, mask, len(self.emotions))
        for layer in range(self.n_layers):
            self.add_layer(layer, acts[layer], w)
        self.add_tokens(w)

    def check_model(self, lens: Any) -> None:
        """Refuse a model of another shape, or another model than these stats were recorded from."""
        if (self.n_layers, self.d_mlp) != (lens.n_layers, lens.d_mlp):
            raise InputError(f"stats are for {self.n_layers}x{self.d_mlp} units, the model has "
                             f"{lens.n_layers}x{lens.d_mlp}")
        if self.model_fingerprint and self.model_fingerprint != lens.fingerprint:
            raise IncompatibleError(f"stats were recorded from model {self.model_fingerprint!r}, this model is "
                                    f"{lens.fingerprint!r}: start new stats with lens.new_stats(...)")

    def record(self, lens: Any, batch: Any = None, emotion_index: Int64[Tensor, " batch"] | None = None, *,
               positions: str | None = None) -> None:
        """Accumulate this batch's statistics from inside ``with lens.trace(batch):`` (every layer's site).

        ``emotion_index`` defaults to the batch's labels; ``positions`` to these stats' position set. Inside a
        ``tracer.invoke(batch)`` it counts that invoke's rows only. Values are taken at the prefill, after any
        edit of the same site applied before this call. Example::

            with lens.trace(batch):
                stats.record(lens)
        """
        self.check_model(lens)
        lens.attach(lambda model, scope: self.hooks(model, scope, emotion_index, positions=positions), batch)

    def hooks(self, model: Any, scope: Any, emotion_index: Int64[Tensor, " batch"] | None = None, *,
              positions: str | None = None) -> list[tuple[Any, Any]]:
        """The ``(site, fn)`` pairs that accumulate ``scope``'s rows (a :class:`~esn_lens.batch.Scope`) into these
        stats at the prefill: one per layer; the batch's tokens are counted when the first layer's value arrives."""
        b = scope.need_batch("stats.record")
        if emotion_index is None:
            if b.labels is None:
                raise InputError("stats.record: the batch has no labels; pass emotion_index (one index per row)")
            emotion_index = self.emotion_index(b.labels)
        if emotion_index.shape[0] != scope.size:
            raise InputError(f"stats.record: {emotion_index.shape[0]} emotion indices for a batch of {scope.size} rows")
        weights = emotion_weights(emotion_index, b.masks.select(positions or self.positions), len(self.emotions))
        out = []
        for layer in range(self.n_layers):
            done = [False]

            def fn(value: Tensor, layer: int = layer, done: list = done) -> None:
                if not done[0]:  # prefill only (generation calls the module again per token)
                    done[0] = True
                    if layer == 0:
                        self.add_tokens(weights)
                    self.add_layer(layer, scope.rows(value), weights)
                return None

            out.append((model.blocks[layer].mlp.site(self.site), fn))
        if self.routed:
            from .moe import route_count_hooks

            out += route_count_hooks(self, model, scope, weights)
        return out

    # ------------------------------------------------------------------ derived
    def _require_tokens(self) -> Float64[Tensor, " emotion"]:
        empty = [e for e, t in zip(self.emotions, self.tokens.tolist()) if t == 0]
        if empty:
            raise InputError(f"no counted tokens for emotion(s) {empty}: add clips of every emotion before scoring")
        return self.tokens

    def unit_tokens(self) -> Float64[Tensor, "emotion *units"]:
        """Each unit's T, broadcastable against K ((emotion, 1, 1) dense, (emotion, layer, neuron) routed), after
        checking that every emotion has counted tokens. A routed unit may have T = 0 (never routed for that emotion):
        its rates and means are then 0 (no evidence), never NaN."""
        self._require_tokens()
        return self.T.view(-1, 1, 1) if self.T.ndim == 1 else self.T

    @property
    def firing_rate(self) -> Float64[Tensor, "emotion layer neuron"]:
        """P_e(n) = K_e(n) / T_e (per unit for routed stats; 0 where T = 0)."""
        return self.K / self.unit_tokens().clamp(min=1)

    @property
    def mean(self) -> Float64[Tensor, "emotion layer neuron"]:
        """Mean value per emotion (over each unit's counted tokens; 0 for a routed unit never routed for the emotion).
        An emotion with no counted tokens gets NaN, with a warning naming it (the others are given); with no tokens at
        all it refuses."""
        empty = [e for e, t in zip(self.emotions, self.tokens.tolist()) if t == 0]
        if len(empty) == len(self.emotions):
            self._require_tokens()
        if empty:
            import warnings

            warnings.warn(f"NeuronStats.mean: no counted tokens for emotion(s) {empty}; their means are NaN, the "
                          "other emotions' are given", stacklevel=2)
        T = self.T.view(-1, 1, 1) if self.T.ndim == 1 else self.T
        return torch.where(self.tokens.view(-1, 1, 1) > 0, self.sum / T.clamp(min=1), torch.nan)

    @property
    def var(self) -> Float64[Tensor, "emotion layer neuron"]:
        """Unbiased variance per emotion (0 where fewer than 2 tokens)."""
        T = self.unit_tokens()
        v = (self.sumsq - self.sum**2 / T.clamp(min=1)) / (T - 1).clamp(min=1)
        return v.clamp(min=0)

    @property
    def overall_mean(self) -> Float64[Tensor, "layer neuron"]:
        """Mean value over all counted tokens of all emotions (for mean-ablation; routed: over the unit's tokens)."""
        if not self.routed:
            return self.sum.sum(0) / self._require_tokens().sum()
        return self.sum.sum(0) / self.unit_tokens().sum(0).clamp(min=1)

    # ------------------------------------------------------------------ merging and files
    def merge(self, other: "NeuronStats") -> "NeuronStats":
        """Add ``other``'s sums into these (in place) and return self."""
        self.check_compatible(other)
        if self.routed != other.routed:
            raise IncompatibleError(f"cannot combine stats: routed differs ({self.routed} vs {other.routed})")
        for name in self.tensor_names():
            getattr(self, name).add_(getattr(other, name).to(getattr(self, name).device).view(getattr(self, name).shape))
        return self

    def _meta(self) -> dict[str, Any]:
        return dict(
            emotions=list(self.emotions), n_layers=self.n_layers, d_mlp=self.d_mlp, site=self.site,
            positions=self.positions, model_fingerprint=self.model_fingerprint, adapter=self.adapter,
            **({"routed": True} if self.routed else {}),
        )

    def state_dict(self) -> dict[str, Any]:
        """Tensors and metadata, enough to rebuild these stats."""
        sd = {"meta": self._meta(), **{n: getattr(self, n).clone() for n in self.tensor_names()}}
        if not self.routed:  # dense stats keep one T per emotion (emotion,) in state dicts and files
            sd["T"] = sd["T"].reshape(-1)
        return sd

    def load_state_dict(self, state: dict[str, Any]) -> "NeuronStats":
        """Restore sums from :meth:`state_dict` (refusing different units)."""
        other = NeuronStats.from_state_dict(state)
        self.check_compatible(other)
        for n in self.tensor_names():
            getattr(self, n).copy_(getattr(other, n).view(getattr(self, n).shape))
        return self

    @classmethod
    def from_state_dict(cls, state: dict[str, Any], device: str | torch.device = "cpu") -> "NeuronStats":
        meta = dict(state["meta"])
        s = cls(tuple(meta.pop("emotions")), device=device, **meta)
        for n in s.tensor_names():
            t = state[n]
            if n == "T" and not s.routed and t.ndim == 1:  # dense T is written as (emotion,)
                t = t.view(-1, 1, 1)
            if tuple(t.shape) != tuple(getattr(s, n).shape):
                raise IncompatibleError(f"stats tensor {n} has shape {tuple(t.shape)}, expected {tuple(getattr(s, n).shape)}")
            getattr(s, n).copy_(t.to(torch.float64))
        return s

    def save(self, path: str | Path) -> None:
        """Write to a safetensors file (atomic)."""
        sd = self.state_dict()
        save_tensors(path, {k: v for k, v in sd.items() if k != "meta"}, STATS_KIND, sd["meta"])

    @classmethod
    def load(cls, path: str | Path, *, expect_fingerprint: str | None = None, expect_site: str | None = None) -> "NeuronStats":
        """Read stats; refuse a corrupt file, or stats of another model or site when expectations are given."""
        tensors, meta = load_tensors(path, STATS_KIND)
        s = checked_file_stats(cls, path, tensors, meta)
        if expect_fingerprint is not None and s.model_fingerprint != expect_fingerprint:
            raise IncompatibleError(f"{path}: stats were recorded from model {s.model_fingerprint!r}, not {expect_fingerprint!r}")
        if expect_site is not None and s.site != expect_site:
            raise IncompatibleError(f"{path}: stats were recorded at site {s.site!r}, not {expect_site!r}")
        return s

    def __repr__(self) -> str:
        T = ", ".join(f"{e}={int(t)}" for e, t in zip(self.emotions, self.tokens.tolist()))
        return (f"NeuronStats(site={self.site!r}, layers={self.n_layers}, d_mlp={self.d_mlp}, "
                f"positions={self.positions!r}, tokens: {T})")
