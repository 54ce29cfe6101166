"""Voxtral (``VoxtralForConditionalGeneration``): a Whisper-style encoder, a projector that merges 4 encoder frames,
and a Llama decoder at ``model.language_model.layers``.

Its prompts are built by mistral_common's instruct tokenizer (``MistralCommonBackend``, a ``tekken.json`` file), not
by a Jinja chat template: ``<s>[INST][BEGIN_AUDIO][AUDIO] x 375 per 30 s chunk <question>[/INST]``. The adapter
hands each clip to it as a WAV part of the user message, so the audio tokens and features are exactly the processor's.
"""
from __future__ import annotations

import base64
import io
from typing import Any, Sequence

import numpy as np
import torch
from jaxtyping import Bool
from torch import Tensor

from ..errors import UnsupportedModelError
from .base import Adapter, register_adapter

VOXTRAL_INSTALL = 'Voxtral inputs are built by mistral_common\'s tokenizer: pip install "esn-lens[voxtral]"'


def _need_mistral_common() -> None:
    try:
        import mistral_common  # noqa: F401
    except ImportError:
        raise UnsupportedModelError(VOXTRAL_INSTALL) from None


def _wav_base64(audio: np.ndarray, rate: int) -> str:
    """One clip as a base64 float WAV (lossless for float32 samples), the form mistral_common reads audio parts in."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.asarray(audio, dtype=np.float32), rate, format="WAV", subtype="FLOAT")
    return base64.b64encode(buf.getvalue()).decode()


@register_adapter("voxtral")
class VoxtralAdapter(Adapter):
    """Voxtral. Audio placeholder ``[AUDIO]`` (375 per 30 s chunk, every clip padded to whole chunks) after
    ``[BEGIN_AUDIO]``; the user turn is ``[INST]`` ... ``[/INST]``; left padding."""

    layers_path = "model.language_model.layers"
    audio_token = "[AUDIO]"
    audio_tower_path = "model.audio_tower"
    embeds_reuse_path = "model.language_model"
    class_names = ("VoxtralForConditionalGeneration",)
    model_types = ("voxtral",)
    turn_start = "[INST]"
    turn_end = "[/INST]"
    #: a row of docs/models.md (esn_lens.adapters.support)
    support = dict(
        title="Voxtral",
        mlp="LlamaMLP: pre = gate_proj out, act = SiLU(gate), post = act * up_proj (down_proj input)",
        audio="`[AUDIO]` ids after `[BEGIN_AUDIO]` (special): 375 per 30 s chunk, each clip padded to whole chunks",
        inputs="mistral_common's instruct tokenizer (`MistralCommonBackend`, `tekken.json`) via the processor's chat "
               "template, clips as WAV parts (left padding); needs `pip install \"esn-lens[voxtral]\"`",
        tested="tiny real model with a tiny Tekken file: sites, residuals, logits, deactivation and steering (forward "
               "and greedy generation) vs plain hooks; stats; batched = alone; positions; `esn-lens run` on a saved folder",
        limits="a 1 s clip still gives 375 audio positions (the padded rest of its 30 s chunk is audio too)",
    )

    def build_inputs(self, audios: Sequence[np.ndarray] | None, prompts: Sequence[str], *,
                     padding_side: str = "left", system: str | None = None) -> dict[str, Tensor]:
        """Token ids, attention mask and (with audio) ``input_features`` (chunks, 128, 3000) from the processor."""
        _need_mistral_common()
        rate = self.sampling_rate
        convs = []
        for i, prompt in enumerate(prompts):
            parts: list[dict] = [] if audios is None else [{"type": "audio", "base64": _wav_base64(audios[i], rate)}]
            conv = [{"role": "user", "content": parts + [{"type": "text", "text": prompt}]}]
            if system:
                conv.insert(0, {"role": "system", "content": system})
            convs.append(conv)
        tok = self.tokenizer
        side, tok.padding_side = tok.padding_side, padding_side
        try:
            enc = self.processor.apply_chat_template(convs, tokenize=True, return_dict=True)
        finally:
            tok.padding_side = side
        return dict(enc)

    @classmethod
    def load_processor(cls, path: str, trust_remote_code: bool = False) -> Any:
        _need_mistral_common()
        from transformers import VoxtralProcessor

        return VoxtralProcessor.from_pretrained(path)

    def _user_turn(self, ids: Tensor) -> Bool[Tensor, "batch pos"] | None:
        """Positions strictly between ``[INST]`` and ``[/INST]`` (Mistral's user turn has no role name)."""
        tok = self.tokenizer
        start, end = tok.convert_tokens_to_ids(self.turn_start), tok.convert_tokens_to_ids(self.turn_end)
        opened = (ids == start).long().cumsum(1) - (ids == end).long().cumsum(1)
        return (opened > 0) & (ids != start)

    def _extra_special_ids(self) -> list[int]:
        return []  # every control token of a Tekken file is in all_special_ids already
