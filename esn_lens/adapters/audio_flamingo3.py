"""Audio Flamingo 3 (``AudioFlamingo3ForConditionalGeneration``): decoder at ``model.language_model.layers``."""
from __future__ import annotations

from .base import Adapter, register_adapter


@register_adapter("audio_flamingo3")
class AudioFlamingo3Adapter(Adapter):
    """Audio Flamingo 3. Audio placeholder ``<sound>``, 25 tokens per second; its processor left-pads."""

    layers_path = "model.language_model.layers"
    audio_token = "<sound>"
    audio_tower_path = "model.audio_tower"
    audio_token_samples = 640  # 40 ms at 16 kHz: 10 ms mel frames, stride-2 conv, pooling 2
    embeds_reuse_path = "model.language_model"
    class_names = ("AudioFlamingo3ForConditionalGeneration",)
    model_types = ("audioflamingo3",)
    #: a row of docs/models.md (esn_lens.adapters.support)
    support = dict(
        title='Audio Flamingo 3',
        mlp="Qwen2MLP: pre = gate_proj out, act = SiLU(gate) (the paper's), post = act * up_proj (down_proj input)",
        audio='`<sound>` ids (25 per second)',
        inputs='its processor + chat template (left padding)',
        tested='tiny real model: sites, stats, edits, generation vs plain hooks; TransformerBridge path equals the HF path',
        limits='-',
    )

    def audio_windows(self) -> int:
        """The processor encodes ``max_audio_len`` seconds (600 by default) as 30 s windows."""
        return int(getattr(self.processor, "max_audio_len", 600) // (self.audio_window_samples // self.sampling_rate))
