"""Any Llama/Qwen2-style causal LM from transformers (``model.layers[i].mlp`` with a gated MLP): text-only corpora."""
from __future__ import annotations

from torch import nn

from .base import Adapter, register_adapter


@register_adapter("causal_lm")
class CausalLMAdapter(Adapter):
    """Generic gated-MLP decoder at ``model.layers`` (Llama, Qwen2, Qwen3, Mistral, ...)."""

    layers_path = "model.layers"
    fallback = True
    #: a row of docs/models.md (esn_lens.adapters.support)
    support = dict(
        title='Llama/Qwen2-style LM',
        mlp='gated MLP (Llama/Qwen2/Mistral style): pre = gate_proj out, act = act_fn(gate), post = down_proj input',
        audio='none (text corpora: the transcript goes in the prompt)',
        inputs='its tokenizer + chat template',
        tested='tiny Qwen2 and Llama: sites, stats, edits, generation vs plain hooks',
        limits='text only',
    )

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        layers = getattr(getattr(model, "model", None), "layers", None)
        return isinstance(layers, nn.ModuleList) and len(layers) > 0 and hasattr(getattr(layers[0], "mlp", None), "gate_proj")
