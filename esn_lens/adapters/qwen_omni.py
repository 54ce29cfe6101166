"""Qwen2.5-Omni: the thinker (``Qwen2_5OmniThinkerForConditionalGeneration``), and the full model through it.

The Omni processor in transformers 5.x refuses to build without image and video processors, which
need torchvision; ``AudioOnlyOmniProcessor`` accepts ``None`` for both (audio + text only). It is built on
first access (``from esn_lens.adapters import AudioOnlyOmniProcessor``), so importing the adapter stays cheap.
"""
from __future__ import annotations

import functools
from typing import Any

from torch import nn

from ..lazy import lazy_attributes, published
from .base import Adapter, register_adapter


@functools.lru_cache(maxsize=None)
def audio_only_omni_processor_class() -> type:
    """The class :class:`AudioOnlyOmniProcessor`, built on first use (importing transformers' Omni processor
    costs seconds, so ``import esn_lens`` does not do it)."""
    from transformers import Qwen2_5OmniProcessor

    class AudioOnlyOmniProcessor(Qwen2_5OmniProcessor):
        """``Qwen2_5OmniProcessor`` that works without image/video processors (audio and text only)."""

        def check_argument_for_proper_class(self, argument_name: str, argument: Any):  # noqa: D401
            if argument is None and argument_name in ("image_processor", "video_processor"):
                return None
            return super().check_argument_for_proper_class(argument_name, argument)

        def __init__(self, image_processor=None, video_processor=None, feature_extractor=None, tokenizer=None,
                     chat_template=None, **kwargs):
            super().__init__(image_processor=image_processor, video_processor=video_processor,
                             feature_extractor=feature_extractor, tokenizer=tokenizer, chat_template=chat_template,
                             **kwargs)

        def save_pretrained(self, save_directory, **kwargs):
            """Save the tokenizer (with the chat template) and the feature extractor; there are no vision processors."""
            if self.chat_template and not getattr(self.tokenizer, "chat_template", None):
                self.tokenizer.chat_template = self.chat_template
            self.tokenizer.save_pretrained(save_directory)
            self.feature_extractor.save_pretrained(save_directory)
            return [str(save_directory)]

        @classmethod
        def from_pretrained(cls, path: str, **kwargs) -> "AudioOnlyOmniProcessor":
            """Load the tokenizer and feature extractor of a Qwen2.5-Omni checkpoint, skipping vision processors."""
            from transformers import AutoTokenizer, WhisperFeatureExtractor

            tok = AutoTokenizer.from_pretrained(path, **kwargs)
            fe = WhisperFeatureExtractor.from_pretrained(path, **kwargs)
            return cls(feature_extractor=fe, tokenizer=tok, chat_template=getattr(tok, "chat_template", None))

    return published(AudioOnlyOmniProcessor, __name__, "AudioOnlyOmniProcessor")


__getattr__ = lazy_attributes(__name__, {"AudioOnlyOmniProcessor": audio_only_omni_processor_class})  # PEP 562: ``from esn_lens.adapters.qwen_omni import AudioOnlyOmniProcessor``


@register_adapter("qwen2_5_omni")
class Qwen25OmniAdapter(Adapter):
    """Qwen2.5-Omni-7B thinker (and ``Qwen2_5OmniForConditionalGeneration`` through ``.thinker``)."""

    layers_path = "model.language_model.layers"
    audio_token = "<|AUDIO|>"
    audio_tower_path = "model.audio_tower"
    audio_token_samples = 640  # 40 ms at 16 kHz: 10 ms mel frames, stride-2 conv, pooling 2
    class_names = ("Qwen2_5OmniThinkerForConditionalGeneration", "Qwen2_5OmniForConditionalGeneration")
    model_types = ("qwen2_5_omni_thinker", "qwen2_5_omni")
    #: a row of docs/models.md (esn_lens.adapters.support)
    support = dict(
        title='Qwen2.5-Omni',
        mlp="Qwen2MLP: pre = gate_proj out, act = SiLU(gate) (the paper's), post = act * up_proj (down_proj input)",
        audio='`<|AUDIO|>` ids (25 per second)',
        inputs='audio-only Omni processor (no torchvision) + chat template',
        tested='tiny real thinker: sites, stats, edits, generation vs plain hooks; full model through `.thinker`',
        limits='text answers only (the talker is not run)',
    )

    @classmethod
    def load_processor(cls, path: str, trust_remote_code: bool = False) -> Any:
        """The audio-only Omni processor (transformers' own needs image/video processors, hence torchvision)."""
        return audio_only_omni_processor_class().from_pretrained(path)

    def root(self) -> nn.Module:
        # calling the full model's forward fails: the thinker is the text-producing model
        return getattr(self.model, "thinker", self.model)
