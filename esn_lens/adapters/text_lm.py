"""Any Llama/Qwen2-style causal LM from transformers (``model.layers[i].mlp`` with a gated MLP): text-only corpora."""
from __future__ import annotations

from torch import nn

from .base import Adapter, register_adapter


@register_adapter("causal_lm")
class CausalLMAdapter(Adapter):
    """Generic gated-MLP decoder at ``model.layers`` (Llama, Qwen2, Qwen3, Mistral, ...)."""

    layers_path = "model.layers"
    fallback = True

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        layers = getattr(getattr(model, "model", None), "layers", None)
        return isinstance(layers, nn.ModuleList) and len(layers) > 0 and hasattr(getattr(layers[0], "mlp", None), "gate_proj")
