"""GLM-ASR (``GlmAsrForConditionalGeneration``): a Whisper-style encoder and a Llama decoder at
``model.language_model.layers``; the processor expands each clip into ``<|pad|>`` audio tokens (4x merged frames)."""
from __future__ import annotations

from .base import Adapter, register_adapter


@register_adapter("glm_asr")
class GlmAsrAdapter(Adapter):
    """GLM-ASR. Audio placeholder ``<|pad|>``; its processor left-pads."""

    layers_path = "model.language_model.layers"
    audio_token = "<|pad|>"
    audio_tower_path = "model.audio_tower"
    embeds_reuse_path = "model.language_model"
    class_names = ("GlmAsrForConditionalGeneration",)
    model_types = ("glmasr",)
    #: a row of docs/models.md (esn_lens.adapters.support)
    support = dict(
        title="GLM-ASR",
        mlp="LlamaMLP: pre = gate_proj out, act = SiLU(gate), post = act * up_proj (down_proj input)",
        audio="`<|pad|>` ids (12.5 per second after the encoder's 4x merge)",
        inputs="its processor + chat template (left padding)",
        tested="tiny real model: sites, residuals, logits, deactivation and steering (forward and greedy generation) "
               "vs plain hooks; positions; `esn-lens run` on a saved folder; TransformerBridge path equals the HF path",
        limits="an ASR model: emotion answers need a prompt it follows; prompt-text positions need ChatML turn "
               "markers (else `prompt_known` is False)",
    )
