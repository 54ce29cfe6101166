"""Gemma 4 (``Gemma4ForConditionalGeneration`` with an ``audio_config``: the E4B release): a conformer audio encoder
(``model.audio_tower``, 25 soft tokens per second, projected by ``model.embed_audio``) and a Gemma decoder at
``model.language_model.layers``.

The decoder's dense MLP is a gated GELU-tanh MLP (``gate_proj`` -> ``act_fn`` x ``up_proj`` -> ``down_proj``), so the
neuron sites are the usual ones. Around it, each layer has what other families lack, none of it a neuron site:
per-layer embeddings (PLE: after the MLP residual, ``per_layer_input_gate`` -> the layer's own ``act_fn`` ->
``per_layer_projection``, a gated write of a per-token, per-layer embedding), a ``layer_scalar`` on the layer's
output, KV sharing (the last ``num_kv_shared_layers`` layers reuse earlier layers' keys and values), and a final
logit soft-cap (``tanh(z / c) * c``) applied after ``lm_head`` (the ``logits`` site is the returned, capped
logits, as Gemma 3n's). Refused, each with one line: the MoE variant
(``enable_moe_block``: a routed expert block beside the dense MLP, outside ``mlp``) and the double-wide MLP of E2B
(``use_double_wide_mlp``: KV-shared layers have twice the units of the others; esn_lens's units are one width).
Its processor requires image and video processors (torchvision); :func:`audio_only_gemma4_processor_class` takes none.
"""
from __future__ import annotations

import functools
import json
import os
from typing import Any

from torch import nn

from ..errors import InputError, UnsupportedModelError
from ..lazy import published
from .base import Adapter, register_adapter


def audio_only_gemma4_processor_class() -> type:
    """``AudioOnlyGemma4Processor``: Gemma 4's processor for audio and text, without image and video processors."""
    return _audio_only("Gemma4Processor", "Gemma4AudioFeatureExtractor", "AudioOnlyGemma4Processor")


def audio_only_gemma4_unified_processor_class() -> type:
    """``AudioOnlyGemma4UnifiedProcessor``: Gemma 4 Unified's processor for audio and text (no image/video)."""
    return _audio_only("Gemma4UnifiedProcessor", "Gemma4UnifiedAudioFeatureExtractor", "AudioOnlyGemma4UnifiedProcessor")


@functools.lru_cache(maxsize=None)
def _audio_only(base_name: str, fe_name: str, name: str) -> type:
    """A subclass ``name`` of the transformers processor ``base_name`` without image and video processors, loading
    its feature extractor as ``fe_name``."""
    import transformers

    base = getattr(transformers, base_name)

    class AudioOnlyGemma4Processor(base):
        """``Gemma4Processor`` that accepts ``image_processor=None`` and ``video_processor=None`` (audio and text)."""

        def check_argument_for_proper_class(self, argument_name: str, argument: Any):  # noqa: D401
            if argument is None and argument_name in ("image_processor", "video_processor"):
                return None
            return super().check_argument_for_proper_class(argument_name, argument)

        def __init__(self, feature_extractor=None, tokenizer=None, chat_template=None, image_processor=None,
                     video_processor=None, **kwargs):
            super().__init__(feature_extractor, image_processor, tokenizer, video_processor,
                             chat_template=chat_template, **kwargs)

        def save_pretrained(self, save_directory, **kwargs):
            """Save the tokenizer (with the chat template), the audio feature extractor and the audio token budget."""
            if self.chat_template and not getattr(self.tokenizer, "chat_template", None):
                self.tokenizer.chat_template = self.chat_template
            self.tokenizer.save_pretrained(save_directory)
            self.feature_extractor.save_pretrained(save_directory)
            with open(os.path.join(save_directory, "processor_config.json"), "w") as f:
                json.dump({"processor_class": base_name, "audio_seq_length": self.audio_seq_length,
                           "audio_ms_per_token": self.audio_ms_per_token}, f, indent=2)
            return [str(save_directory)]

        @classmethod
        def from_pretrained(cls, path: str, **kwargs) -> "AudioOnlyGemma4Processor":
            """The tokenizer, audio feature extractor and audio settings of a checkpoint folder."""
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(path, **kwargs)
            fe = getattr(transformers, fe_name).from_pretrained(path, **kwargs)
            cfg_file = os.path.join(path, "processor_config.json")
            cfg = json.load(open(cfg_file)) if os.path.isfile(cfg_file) else {}
            audio = {k: cfg[k] for k in ("audio_seq_length", "audio_ms_per_token") if k in cfg}
            return cls(feature_extractor=fe, tokenizer=tok, chat_template=getattr(tok, "chat_template", None), **audio)

    AudioOnlyGemma4Processor.__name__ = name
    AudioOnlyGemma4Processor.__doc__ = f"``{base_name}`` that accepts no image and video processors (audio and text)."
    return published(AudioOnlyGemma4Processor, __name__, name)


@register_adapter("gemma4")
class Gemma4Adapter(Adapter):
    """Gemma 4 with audio. Audio placeholder ``<|audio|>`` (25 per second) between ``<|audio>`` and ``<audio|>``;
    user turn ``<|turn>user`` ... ``<turn|>``; left padding."""

    layers_path = "model.language_model.layers"
    returned_logits = True  # the logits site is the returned logits (after the final soft-cap)
    audio_token = "<|audio|>"
    audio_tower_path = "model.audio_tower"
    max_audio_seconds = 30.0  # the feature extractor cuts at 480000 samples (750 soft tokens)
    class_names = ("Gemma4ForConditionalGeneration",)
    model_types = ("gemma4",)
    turn_start = "<|turn>"
    turn_end = "<turn|>"
    #: a row of docs/models.md (esn_lens.adapters.support)
    support = dict(
        title="Gemma 4",
        mlp="Gemma4TextMLP: pre = gate_proj out, act = GELU-tanh(gate), post = act * up_proj (down_proj input); the "
            "per-layer-embedding gate (the layer's own `act_fn`) is not a unit",
        audio="`<|audio|>` ids (25 per second) between `<|audio>` and `<audio|>` (special)",
        inputs="its processor without image/video processors (audio + text; no torchvision) + chat template "
               "(left padding)",
        tested="tiny real model with per-layer embeddings, KV sharing and logit soft-capping: sites, residuals, logits, "
               "deactivation and steering (forward and greedy generation) vs plain hooks; stats; batched = alone; "
               "positions; planted units recovered; encoder reuse = rerun; `esn-lens run` on a saved folder",
        limits="E4B only: E2B's double-wide MLP (`use_double_wide_mlp`) and the MoE variant (`enable_moe_block`) are "
               "refused; `logits` = the returned logits, after the final soft-cap (not `lm_head`'s raw output); no images",
    )

    def check_mlp(self) -> None:
        """The dense gated MLP of every layer, one width; refuse the MoE block and E2B's double-wide layers."""
        text = self.config.get_text_config() if self.config is not None else None
        if getattr(text, "enable_moe_block", False) is True:
            raise UnsupportedModelError(
                f"{type(self.model).__name__}: Gemma 4 with enable_moe_block (a routed expert block beside each layer's "
                "dense MLP, outside `mlp`) is not supported; esn_lens supports the dense Gemma 4 decoders")
        widths = sorted({int(self.mlp_module(i).gate_proj.out_features) for i in range(len(self.layers()))})
        if len(widths) > 1:
            raise UnsupportedModelError(
                f"{type(self.model).__name__}: layer MLPs have different widths {widths} (use_double_wide_mlp: the "
                "KV-shared layers are double-wide, as in Gemma 4 E2B); esn_lens's units need one width per model")
        super().check_mlp()

    def __init__(self, model: nn.Module, processor: Any = None):
        super().__init__(model, processor)
        tok_audio = getattr(self.tokenizer, "audio_token", None) if processor is not None else None
        if isinstance(tok_audio, str):
            self.audio_token = tok_audio  # the checkpoint's own placeholder

    def build_inputs(self, audios, prompts, *, padding_side: str = "left", system=None):
        """Token ids, attention mask and (with audio) ``input_features`` (clips, frames, 128) + ``input_features_mask``."""
        if audios is not None and getattr(self.root().model, "audio_tower", None) is None:
            raise InputError(f"{type(self.model).__name__} has no audio tower (its config has no audio_config): "
                             "audio inputs need a Gemma 4 checkpoint with audio (E4B)")
        return super().build_inputs(audios, prompts, padding_side=padding_side, system=system)

    @classmethod
    def load_processor(cls, path: str, trust_remote_code: bool = False) -> Any:
        """The audio-only Gemma 4 processor (transformers' own needs image/video processors, hence torchvision)."""
        return audio_only_gemma4_processor_class().from_pretrained(path)


@register_adapter("gemma4_unified")
class Gemma4UnifiedAdapter(Gemma4Adapter):
    """Gemma 4 Unified (``Gemma4UnifiedForConditionalGeneration``, the 12B release): no audio encoder; each audio token
    is a raw 40 ms waveform frame (640 samples) projected by ``model.embed_audio`` (RMSNorm -> Linear). Its decoder is
    Gemma 4's without per-layer embeddings or MoE."""

    audio_tower_path = None  # no tower: the frames' projection runs in every forward (cheap)
    max_audio_seconds = None
    #: the exact time map: token k is samples [640 k, 640 (k + 1)) and nothing else (no encoder, no window, no cut)
    audio_token_samples = 640
    audio_token_reach = (0, 0)
    audio_window_samples = 2**62

    def window_tokens(self, n_samples: int) -> int:
        """One audio token per started 40 ms frame: ``ceil(n_samples / 640)`` (the last frame is zero-padded)."""
        return -(-int(n_samples) // self.audio_token_samples)
    class_names = ("Gemma4UnifiedForConditionalGeneration",)
    model_types = ("gemma4_unified",)
    support = dict(
        title="Gemma 4 Unified",
        mlp="Gemma4TextMLP: pre = gate_proj out, act = GELU-tanh(gate), post = act * up_proj (down_proj input)",
        audio="`<|audio|>` ids, one per raw 40 ms waveform frame (25 per second, no encoder), between `<|audio>` "
              "and `<audio|>` (special)",
        inputs="its processor without image/video processors (audio + text; no torchvision) + chat template "
               "(left padding)",
        tested="tiny real model: sites, residuals, logits, deactivation and steering (forward and greedy generation) vs "
               "plain hooks; stats; batched = alone; positions; the time map vs the model (a token's embedding changes only "
               "when its own 640 samples do); `esn-lens run` on a saved folder",
        limits="no `audio_encoder` site (there is no audio encoder); `logits` = the returned, soft-capped logits; no images; "
               "the audio-token time map is exact (token k = samples 640k to 640k + 640: it reads nothing else)",
    )

    def build_inputs(self, audios, prompts, *, padding_side: str = "left", system=None):
        """Token ids, attention mask and (with audio) ``input_features`` (clips, frames, 640) + ``input_features_mask``."""
        if audios is not None and getattr(self.root().model, "embed_audio", None) is None:
            raise InputError(f"{type(self.model).__name__} has no audio embedder (its config has no audio_config)")
        return Adapter.build_inputs(self, audios, prompts, padding_side=padding_side, system=system)

    @classmethod
    def load_processor(cls, path: str, trust_remote_code: bool = False) -> Any:
        """The audio-only Gemma 4 Unified processor (transformers' own needs image/video processors)."""
        return audio_only_gemma4_unified_processor_class().from_pretrained(path)
