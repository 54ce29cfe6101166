"""Audio Flamingo 3 (``AudioFlamingo3ForConditionalGeneration``): decoder at ``model.language_model.layers``."""
from __future__ import annotations

from .base import Adapter, register_adapter


@register_adapter("audio_flamingo3")
class AudioFlamingo3Adapter(Adapter):
    """Audio Flamingo 3. Audio placeholder ``<sound>``, 25 tokens per second; its processor left-pads."""

    layers_path = "model.language_model.layers"
    audio_token = "<sound>"
    audio_tower_path = "model.audio_tower"
    embeds_reuse_path = "model.language_model"
    class_names = ("AudioFlamingo3ForConditionalGeneration",)
    model_types = ("audioflamingo3",)
