"""Phi-4-multimodal (``Phi4MultimodalForCausalLM``): a conformer speech encoder inside the embedding
(``model.embed_tokens_extend``) and a Phi-3 decoder at ``model.layers`` whose MLP fuses gate and up.

The MLP computes ``gate, up = gate_up_proj(x).chunk(2)``, ``down_proj(up * activation_fn(gate))``, so the neuron
sites are this adapter's own: ``hook_pre`` = the gate half of ``gate_up_proj``'s output, read (and edited) as the
input of ``activation_fn`` (each layer has its own activation module, which only ever receives the gate half);
``hook_act`` = ``activation_fn``'s output; ``hook_post`` = ``down_proj``'s input (``up * act``).

Speech goes through a LoRA on the decoder (the checkpoint's ``speech-lora/`` folder, a PEFT adapter): the adapter
loads it as the PEFT adapter ``"speech"`` and switches it on for every forward whose inputs carry audio, off for
text-only ones. Its processor requires an image processor (torchvision); :class:`AudioOnlyPhi4Processor` takes none.
"""
from __future__ import annotations

import functools
import os
from typing import Any

from jaxtyping import Bool
from torch import Tensor, nn

from ..errors import InputError, UnsupportedModelError
from .base import Adapter, register_adapter
from .speech_lora import SpeechLoRA

PHI4_INSTALL = 'Phi-4-multimodal\'s speech LoRA is a PEFT adapter: pip install "esn-lens[phi4]"'


@functools.lru_cache(maxsize=None)
def audio_only_phi4_processor_class() -> type:
    """``AudioOnlyPhi4Processor``: Phi-4-multimodal's processor for audio and text, without an image processor."""
    from transformers import Phi4MultimodalProcessor

    class AudioOnlyPhi4Processor(Phi4MultimodalProcessor):
        """``Phi4MultimodalProcessor`` that accepts ``image_processor=None`` (audio and text only)."""

        def check_argument_for_proper_class(self, argument_name: str, argument: Any):  # noqa: D401
            if argument is None and argument_name == "image_processor":
                return None
            return super().check_argument_for_proper_class(argument_name, argument)

        def __init__(self, image_processor=None, audio_processor=None, tokenizer=None, chat_template=None, **kwargs):
            super().__init__(image_processor, audio_processor, tokenizer, chat_template=chat_template, **kwargs)

        def save_pretrained(self, save_directory, **kwargs):
            """Save the tokenizer (with the chat template) and the audio feature extractor."""
            if self.chat_template and not getattr(self.tokenizer, "chat_template", None):
                self.tokenizer.chat_template = self.chat_template
            self.tokenizer.save_pretrained(save_directory)
            self.audio_processor.save_pretrained(save_directory)
            return [str(save_directory)]

        @classmethod
        def from_pretrained(cls, path: str, **kwargs) -> "AudioOnlyPhi4Processor":
            from transformers import AutoTokenizer, Phi4MultimodalFeatureExtractor

            tok = AutoTokenizer.from_pretrained(path, **kwargs)
            fe = Phi4MultimodalFeatureExtractor.from_pretrained(path, **kwargs)
            return cls(audio_processor=fe, tokenizer=tok, chat_template=getattr(tok, "chat_template", None))

    AudioOnlyPhi4Processor.__module__ = __name__
    return AudioOnlyPhi4Processor


@register_adapter("phi4_multimodal")
class Phi4MultimodalAdapter(SpeechLoRA, Adapter):
    """Phi-4-multimodal. Audio placeholder: the processor's ``audio_token``; user turn ``<|user|>`` ... ``<|end|>``."""

    layers_path = "model.layers"
    speech_feature_key = "audio_input_features"  # the speech LoRA is on when these are given
    audio_token = "<|audio|>"
    class_names = ("Phi4MultimodalForCausalLM",)
    model_types = ("phi4_multimodal",)
    turn_start = "<|user|>"
    turn_end = "<|end|>"
    #: a row of docs/models.md (esn_lens.adapters.support)
    support = dict(
        title="Phi-4-multimodal",
        mlp="Phi-3 fused MLP: pre = gate half of `gate_up_proj` out (= `activation_fn` input), act = SiLU(gate), "
            "post = act * up half (`down_proj` input)",
        audio="the processor's audio token (`<\\|audio\\|>`), one per `audio_embed_sizes` frame",
        inputs="its processor without the image processor (audio + text) + chat template (left padding); the speech "
               "LoRA (`speech-lora/`, PEFT) on for inputs with audio, off for text; needs `pip install \"esn-lens[phi4]\"`",
        tested="tiny real model with a random speech LoRA: sites, residuals, logits, deactivation and steering (forward "
               "and greedy generation) vs plain hooks; LoRA on with audio / off without; positions; `esn-lens run` on a "
               "saved folder (base weights + `speech-lora/`)",
        limits="no `audio_encoder` site (the speech encoder runs inside the embedding), so conditions rerun it; its "
               "conformer sees a shorter clip's feature padding in a batch (~4e-5 off that clip alone); no images",
    )

    def __init__(self, model: nn.Module, processor: Any = None):
        self.model, self.processor = model, processor
        mlp = self.mlp_module(0)
        for part in ("gate_up_proj", "activation_fn", "down_proj"):
            if not hasattr(mlp, part):
                raise UnsupportedModelError(f"{type(model).__name__}: layer MLP has no {part!r} (not Phi-4's fused MLP)")
        self.audio_token = getattr(processor, "audio_token", None) or type(self).audio_token
        self._load_speech_lora()

    def _load_speech_lora(self) -> None:
        """Attach the checkpoint's ``speech-lora/`` (PEFT format) as the LoRA adapter ``"speech"``, unless attached."""
        folder = os.path.join(getattr(self.model, "name_or_path", "") or "", "speech-lora")
        if not os.path.isdir(folder) or getattr(self.model, "_esn_speech_lora", False):
            return
        try:
            import peft  # noqa: F401
        except ImportError:
            raise UnsupportedModelError(PHI4_INSTALL) from None
        if self._lora_layers():
            return
        self.inject_speech_lora(folder)
        self.model._esn_speech_lora = True

    @property
    def d_mlp(self) -> int:
        return int(self.mlp_module(0).down_proj.in_features)

    def site_path(self, layer: int, site: str) -> tuple[str, str]:
        if not 0 <= layer < self.n_layers:
            raise InputError(f"layer {layer} out of range 0..{self.n_layers - 1}")
        part, side = {"pre": ("activation_fn", "input"), "act": ("activation_fn", "output"),
                      "post": ("down_proj", "input")}[site]
        return f"{self.mlp_path(layer)}.{part}", side


    def build_inputs(self, audios, prompts, *, padding_side: str = "left", system=None):
        if audios is None:
            return super().build_inputs(audios, prompts, padding_side=padding_side, system=system)
        texts = [self.render_prompt(p, with_audio=True, system=system) for p in prompts]
        enc = self.processor(text=texts, audio=list(audios), sampling_rate=self.sampling_rate, return_tensors="pt",
                             text_kwargs={"padding": True, "padding_side": padding_side})
        return dict(enc)

    @classmethod
    def load_processor(cls, path: str, trust_remote_code: bool = False) -> Any:
        return audio_only_phi4_processor_class().from_pretrained(path)

    def _user_turn(self, ids: Tensor) -> Bool[Tensor, "batch pos"] | None:
        """Positions strictly between ``<|user|>`` and ``<|end|>`` (Phi's turns have no role name after the marker)."""
        tok = self.tokenizer
        start, end = tok.convert_tokens_to_ids(self.turn_start), tok.convert_tokens_to_ids(self.turn_end)
        opened = (ids == start).long().cumsum(1) - (ids == end).long().cumsum(1)
        return (opened > 0) & (ids != start)
