"""The statistics attribution patching accumulates: per-emotion sums of per-clip attribution of every unit."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float, Float64, Int64
from torch import Tensor

from .errors import InputError
from .stats import UnitStats


@dataclass
class AttributionStats(UnitStats):
    """Per-emotion sums of per-clip attribution ``sum_pos a * dM/da`` of every unit at one MLP site.

    ``sum``: (emotion, layer, neuron) float64; ``n_clips``: (emotion,). ``mean`` = sum / n_clips.
    """

    sum: Tensor = field(init=False, repr=False)
    n_clips: Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.sum = torch.zeros(len(self.emotions), self.n_layers, self.d_mlp, dtype=torch.float64)
        self.n_clips = torch.zeros(len(self.emotions), dtype=torch.float64)

    @property
    def mean(self) -> Float64[Tensor, "emotion layer neuron"]:
        """Mean attribution per clip of each emotion (refuses emotions without clips)."""
        empty = [e for e, n in zip(self.emotions, self.n_clips.tolist()) if n == 0]
        if empty:
            raise InputError(f"no attributed clips for emotion(s) {empty}: add clips of every emotion before scoring")
        return self.sum / self.n_clips[:, None, None]

    def add_layer(self, layer: int, per_row: Float[Tensor, "batch neuron"], emotion_index: Int64[Tensor, " batch"]) -> None:
        """Add one layer's per-row attributions to the row's emotion."""
        onehot = torch.nn.functional.one_hot(emotion_index.long().cpu(), len(self.emotions)).to(torch.float64)
        self.sum[:, layer] += onehot.T @ per_row.detach().to("cpu", torch.float64)

    def merge(self, other: "AttributionStats") -> "AttributionStats":
        """Add another shard's sums (identical to one pass over both)."""
        self.check_compatible(other)
        self.sum += other.sum
        self.n_clips += other.n_clips
        return self

    def state_dict(self) -> dict[str, Any]:
        """Tensors and metadata, enough to rebuild these statistics (checkpoints, files)."""
        meta = dict(emotions=list(self.emotions), n_layers=self.n_layers, d_mlp=self.d_mlp, site=self.site,
                    positions=self.positions, model_fingerprint=self.model_fingerprint, adapter=self.adapter)
        return {"meta": meta, "sum": self.sum.clone(), "n_clips": self.n_clips.clone()}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> "AttributionStats":
        """Rebuild from :meth:`state_dict`, refusing tensors of the wrong shape or dtype."""
        meta = dict(state["meta"])
        att = cls(tuple(meta.pop("emotions")), **meta)
        for name in ("sum", "n_clips"):
            t = state[name]
            if tuple(t.shape) != tuple(getattr(att, name).shape) or t.dtype != torch.float64:
                raise InputError(f"attribution tensor {name}: {t.dtype} {tuple(t.shape)}, expected float64 "
                                 f"{tuple(getattr(att, name).shape)}")
            getattr(att, name).copy_(t)
        return att

    def __repr__(self) -> str:
        n = ", ".join(f"{e}={int(c)}" for e, c in zip(self.emotions, self.n_clips.tolist()))
        return f"AttributionStats(site={self.site!r}, layers={self.n_layers}, d_mlp={self.d_mlp}, clips: {n})"
