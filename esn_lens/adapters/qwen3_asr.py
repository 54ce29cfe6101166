"""Qwen3-ASR (``Qwen3ASRForConditionalGeneration``): a chunked Whisper-style encoder and a Qwen3 decoder at
``model.language_model.layers``. The encoder reads features in chunks of ``2 * n_window`` frames, so the adapter
pads each batch's features to a multiple of that (the processor's own padding is to the longest clip)."""
from __future__ import annotations

from typing import Any

from torch import nn

from .base import Adapter, register_adapter


@register_adapter("qwen3_asr")
class Qwen3ASRAdapter(Adapter):
    """Qwen3-ASR. Audio placeholder: the processor's ``audio_token`` (``<|audio_pad|>`` in the release)."""

    layers_path = "model.language_model.layers"
    audio_token = "<|audio_pad|>"
    audio_tower_path = "model.audio_tower"
    embeds_reuse_path = "model.language_model"
    class_names = ("Qwen3ASRForConditionalGeneration",)
    model_types = ("qwen3_asr",)
    #: a row of docs/models.md (esn_lens.adapters.support)
    support = dict(
        title="Qwen3-ASR",
        mlp="Qwen3MLP: pre = gate_proj out, act = SiLU(gate), post = act * up_proj (down_proj input)",
        audio="the processor's audio token (`<|audio_pad|>`; 13 per 100 feature frames) between audio begin/end",
        inputs="its processor + chat template; features padded to whole encoder chunks (2 x n_window frames)",
        tested="tiny real model: sites, residuals, logits, deactivation and steering (forward and greedy generation) "
               "vs plain hooks; positions; `esn-lens run` on a saved folder",
        limits="an ASR model: emotion answers need a prompt it follows",
    )

    def __init__(self, model: nn.Module, processor: Any = None):
        super().__init__(model, processor)
        self.audio_token = getattr(processor, "audio_token", None) or type(self).audio_token

    def build_inputs(self, audios, prompts, *, padding_side: str = "left", system=None):
        if audios is None:
            return super().build_inputs(audios, prompts, padding_side=padding_side, system=system)
        audio_cfg = getattr(self.root().config, "audio_config", None)
        n_window = int(getattr(audio_cfg, "n_window", 50))
        fe = self.processor.feature_extractor
        chunk = 2 * n_window * int(getattr(fe, "hop_length", 160))
        texts = [self.render_prompt(p, with_audio=True, system=system) for p in prompts]
        enc = self.processor(text=texts, audio=list(audios), sampling_rate=self.sampling_rate, return_tensors="pt",
                             text_kwargs={"padding": True, "padding_side": padding_side},
                             audio_kwargs={"pad_to_multiple_of": chunk, "n_window": n_window})
        return {k: v for k, v in dict(enc).items() if k != "num_audio_tokens"}
