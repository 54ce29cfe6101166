"""Qwen2-Audio (``Qwen2AudioForConditionalGeneration``): decoder at ``model.language_model.layers``."""
from __future__ import annotations

from .base import Adapter, register_adapter


@register_adapter("qwen2_audio")
class Qwen2AudioAdapter(Adapter):
    """Qwen2-Audio-7B(-Instruct). Audio placeholder ``<|AUDIO|>``, 25 tokens per second; features are 3000 frames."""

    layers_path = "model.language_model.layers"
    audio_token = "<|AUDIO|>"
    audio_tower_path = "model.audio_tower"
    embeds_reuse_path = "model.language_model"
    max_audio_seconds = 30.0  # Whisper features are exactly 3000 frames
    class_names = ("Qwen2AudioForConditionalGeneration",)
    model_types = ("qwen2_audio",)
