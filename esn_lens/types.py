"""jaxtyping aliases used across esn_lens.

Dimension names: ``emotion`` (E), ``layer`` (L), ``neuron`` (N = d_mlp), ``batch`` (B), ``pos`` (P), ``time``.
"""
from __future__ import annotations

from jaxtyping import Bool, Float, Float64, Int, Int64
from torch import Tensor

#: Per-layer activations at one MLP site for a batch.
SiteActivations = Float[Tensor, "batch pos neuron"]
#: Boolean mask of positions that count (valid tokens).
PositionMask = Bool[Tensor, "batch pos"]
#: Scores of every (emotion, layer, neuron).
Scores = Float[Tensor, "emotion layer neuron"]
#: A selection: per emotion, which (layer, neuron) units are chosen.
SelectionMask = Bool[Tensor, "emotion layer neuron"]
#: Mono audio samples.
Waveform = Float[Tensor, " time"]

__all__ = [
    "Bool", "Float", "Float64", "Int", "Int64", "Tensor",
    "SiteActivations", "PositionMask", "Scores", "SelectionMask", "Waveform",
]
