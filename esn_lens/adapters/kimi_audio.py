"""Kimi-Audio (``MoonshotKimiaForCausalLM``, hub code loaded with trust_remote_code).

Its 28 Qwen2-style text layers live at ``model.layers[i]``; the 6 ``mimo_layers`` branch off layer 21
and only produce audio tokens, so they are not part of text answers. Inputs (text ids, audio
tokens, Whisper features) come from the user's Kimi-Audio toolkit: pass them as a dict to the Lens.
:class:`TinyKimiaForCausalLM` reproduces the module tree for tests.
"""
from __future__ import annotations

import functools
from typing import Any

from ..errors import InputError
from ..lazy import lazy_attributes, published
from .base import Adapter, register_adapter


@functools.lru_cache(maxsize=None)
def tiny_kimia_class() -> type:
    """The class :class:`TinyKimiaForCausalLM`, built on first use (keeps ``import esn_lens`` cheap)."""
    from torch import nn
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from transformers.models.qwen2.modeling_qwen2 import Qwen2DecoderLayer

    class TinyKimiaForCausalLM(Qwen2ForCausalLM):
        """A Qwen2 causal LM with extra ``model.mimo_layers`` (the Kimi-Audio module tree), for tests."""

        def __init__(self, text_dims: dict[str, Any] | Qwen2Config, n_mimo_layers: int = 1):
            cfg = text_dims if isinstance(text_dims, Qwen2Config) else Qwen2Config(**text_dims)
            super().__init__(cfg)
            self.model.mimo_layers = nn.ModuleList([Qwen2DecoderLayer(cfg, i) for i in range(n_mimo_layers)])

    return published(TinyKimiaForCausalLM, __name__, "TinyKimiaForCausalLM")


__getattr__ = lazy_attributes(__name__, {"TinyKimiaForCausalLM": tiny_kimia_class})  # PEP 562: ``from esn_lens.adapters.kimi_audio import TinyKimiaForCausalLM``


@register_adapter("kimi_audio")
class KimiAudioAdapter(Adapter):
    """Kimi-Audio-7B-Instruct text stack (``model.layers``; ``mimo_layers`` excluded)."""

    layers_path = "model.layers"
    class_names = ("MoonshotKimiaForCausalLM", "TinyKimiaForCausalLM")
    model_types = ("kimi_audio", "kimia")

    def build_inputs(self, audios, prompts, *, padding_side: str = "left", system=None):
        if audios is not None:
            raise InputError("kimi_audio: build audio inputs with the Kimi-Audio toolkit and pass the dict to the Lens "
                             "(its audio tokenizer is not part of transformers)")
        return super().build_inputs(None, prompts, padding_side=padding_side, system=system)
