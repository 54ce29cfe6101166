"""MOSS-Transcribe-Diarize (``MossTranscribeDiarizeForConditionalGeneration``): a Whisper-style encoder (30 s chunks),
a projector over 4 merged encoder frames (12.5 audio tokens per second) and a Qwen3 decoder at
``model.language_model.layers``.

Its processor writes literal time markers into the audio span: every 2 s of audio, the text of the second count
(``2``, ``4``, ...) between the ``<|audio_pad|>`` tokens. Those positions are neither audio nor the user's prompt: the
adapter's prompt text is the user turn outside ``<|audio_start|>`` ... ``<|audio_end|>``.
"""
from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Bool
from torch import Tensor, nn

from .base import Adapter, register_adapter


@register_adapter("moss_transcribe_diarize")
class MossTranscribeDiarizeAdapter(Adapter):
    """MOSS-Transcribe-Diarize. Audio placeholder: the processor's ``audio_token`` (``<|audio_pad|>``), between its
    audio begin/end tokens with time markers every 2 s; ChatML turns; left padding."""

    layers_path = "model.language_model.layers"
    audio_token = "<|audio_pad|>"
    audio_tower_path = "model.audio_tower"
    embeds_reuse_path = "model.language_model"
    class_names = ("MossTranscribeDiarizeForConditionalGeneration",)
    model_types = ("moss_transcribe_diarize",)
    #: a row of docs/models.md (esn_lens.adapters.support)
    support = dict(
        title="MOSS-Transcribe-Diarize",
        mlp="Qwen3MLP: pre = gate_proj out, act = SiLU(gate), post = act * up_proj (down_proj input)",
        audio="the processor's audio token (`<|audio_pad|>`, 12.5 per second) between its audio begin/end tokens "
              "(special); the time markers it writes every 2 s inside the span are neither audio nor prompt text",
        inputs="its processor + chat template (left padding); clips over 30 s are encoded in 30 s chunks",
        tested="tiny real model: sites, residuals, logits, deactivation and steering (forward and greedy generation) "
               "vs plain hooks; stats; batched = alone; positions with time markers; encoder reuse = rerun; "
               "`esn-lens run` on a saved folder",
        limits="a transcription/diarization model: emotion answers need a prompt it follows",
    )

    def __init__(self, model: nn.Module, processor: Any = None):
        super().__init__(model, processor)
        self._span = (None, None)
        if processor is not None:
            self.audio_token = getattr(processor, "audio_token", None) or type(self).audio_token
            self._span = (getattr(processor, "audio_bos_token", None), getattr(processor, "audio_eos_token", None))

    def _user_turn(self, ids: Tensor) -> Bool[Tensor, "batch pos"] | None:
        """The ChatML user turn without the audio span (begin token .. end token, time markers included)."""
        user = super()._user_turn(ids)
        bos, eos = self._span
        if user is None or bos is None or eos is None:
            return user
        tok = self.tokenizer
        start, end = (ids == tok.convert_tokens_to_ids(bos)), (ids == tok.convert_tokens_to_ids(eos))
        inside = (start.long().cumsum(1) - end.long().cumsum(1)) > 0  # from the begin token up to before the end
        return user & ~inside & ~end
