"""Granite Speech (``GraniteSpeechForConditionalGeneration``): a conformer CTC encoder (``model.encoder``), a windowed
Q-Former projector (``model.projector``: 3 queries per 15 encoder frames, 10 audio tokens per second) and a Granite
decoder at ``model.language_model.layers`` (a Llama-style gated MLP, so the paper's sites are the usual ones).

Granite's multipliers, and what the sites mean with them: the decoder multiplies its input embeddings (text and audio
alike) by ``embedding_multiplier`` after ``hook_embed`` (``embed_tokens``' output, unscaled); each layer adds
``residual_multiplier * attn_out`` and ``residual_multiplier * mlp_out``, so ``hook_attn_out`` / ``hook_mlp_out`` are the
branch outputs before that factor and ``hook_resid_pre/post`` the residual stream itself (the sum); ``logits`` is
``lm_head``'s output, exactly the model's returned logits (Granite Speech does not divide by ``logits_scaling``, unlike
``GraniteForCausalLM``). With audio, transformers runs ``embed_tokens`` twice (its first output is discarded), so
``hook_embed`` reads the right values but an edit there must target its second call.

The release ships a speech LoRA (PEFT files ``adapter_config.json`` / ``adapter_model.safetensors`` beside the weights)
meant to be on only when audio is present. ``from_pretrained`` attaches it when peft is installed; the adapter attaches
it itself when it is missing, refuses to run without peft, and switches it on for every forward and generation whose
inputs carry ``input_features``, off for text-only ones. The feature extractor needs torchaudio; without it the adapter
uses :mod:`esn_lens.adapters.granite_speech_features` (the same features in torch).
"""
from __future__ import annotations

import os
from typing import Any

from torch import nn

from ..errors import UnsupportedModelError
from .base import Adapter, register_adapter
from .speech_lora import SpeechLoRA

GRANITE_INSTALL = 'Granite Speech\'s speech LoRA is a PEFT adapter: pip install "esn-lens[granite]"'


@register_adapter("granite_speech")
class GraniteSpeechAdapter(SpeechLoRA, Adapter):
    """Granite Speech. Audio placeholder ``<|audio|>`` (expanded by its processor to 3 per 0.3 s block of audio);
    user turn ``<|start_of_role|>user<|end_of_role|>`` ... ``<|end_of_text|>``; left padding."""

    layers_path = "model.language_model.layers"
    audio_token = "<|audio|>"
    audio_tower_path = "model.encoder"  # conditions reuse its output: the inputs keep input_features (LoRA switch)
    class_names = ("GraniteSpeechForConditionalGeneration",)
    model_types = ("granite_speech",)
    turn_start = "<|start_of_role|>"
    turn_end = "<|end_of_text|>"
    #: a row of docs/models.md (esn_lens.adapters.support)
    support = dict(
        title="Granite Speech",
        mlp="GraniteMLP (Llama-style): pre = gate_proj out, act = SiLU(gate), post = act * up_proj (down_proj input); "
            "resid = the stream with residual_multiplier inside, attn_out/mlp_out before it",
        audio="the processor's `<\\|audio\\|>` ids: 3 per started 0.3 s of audio (Q-Former windows of 15 encoder frames)",
        inputs="its processor + chat template as string content (`<\\|audio\\|>` before the question, left padding); "
               "log-mel features in torch when torchaudio is missing; the speech LoRA on for inputs with audio, off "
               "for text; needs `pip install \"esn-lens[granite]\"` for a checkpoint with a LoRA",
        tested="tiny real model with the release's multipliers and a random q/v speech LoRA: sites, residuals, logits, "
               "deactivation and steering (forward and greedy generation) vs plain hooks; LoRA on with audio / off "
               "without; torch features vs a numpy reference and token counts vs the processor's formula; reused "
               "encoder output = rerun; stats; positions; `esn-lens run` on a saved folder (weights + PEFT files)",
        limits="logits are not divided by `logits_scaling` (the model's own output); no audio-token time map; an edit "
               "at `hook_embed` must target embed_tokens' second call; Granite 3.x templates may add a dated default "
               "system turn (pass `system=` for fixed prompts); no encoder units (its conformer has no fc1/fc2 MLP); batched rows "
               "equal rows alone only for equal-length clips (features of the zero-padded batch)",
    )

    def __init__(self, model: nn.Module, processor: Any = None):
        super().__init__(model, processor)
        self.audio_token = getattr(processor, "audio_token", None) or type(self).audio_token
        self._attach_speech_lora()

    # -------------------------------------------------------------- the speech LoRA
    def _attach_speech_lora(self) -> None:
        """Attach the checkpoint's speech LoRA (PEFT files beside the weights) unless attached; refuse without peft
        when the config says the model has one (``has_lora_adapter``).
        When transformers attached it, its own switch in ``generate`` (``enable_adapters``, which wants a newer peft
        than this one) is handed to :meth:`call_args`."""
        folder = getattr(self.model, "name_or_path", "") or ""
        has_files = os.path.isfile(os.path.join(folder, "adapter_config.json"))
        if self._lora_layers():
            if getattr(self.model, "_hf_peft_config_loaded", False) and not _peft_meets_transformers():
                self.model._hf_peft_config_loaded = False  # call_args switches the LoRA layers itself
            return
        if not (has_files or getattr(self.config, "has_lora_adapter", False)):
            return
        try:  # the config says a LoRA belongs to the model: without peft transformers ran without it
            import peft  # noqa: F401
        except ImportError:
            raise UnsupportedModelError(GRANITE_INSTALL) from None
        if not has_files:
            return  # built in memory (or the files are elsewhere): nothing here to attach
        self.inject_speech_lora(folder)

    # -------------------------------------------------------------- inputs
    def conversation(self, prompt: str, with_audio: bool = True, system: str | None = None) -> list[dict]:
        """String message content with ``<|audio|>`` before the prompt (the form Granite's templates take)."""
        return self.conversation_text(prompt, with_audio, system)

    @classmethod
    def load_processor(cls, path: str, trust_remote_code: bool = False) -> Any:
        """``GraniteSpeechProcessor`` with transformers' feature extractor, or the torch one without torchaudio."""
        from transformers import AutoTokenizer, GraniteSpeechProcessor

        from .granite_speech_features import granite_feature_extractor_class

        tok = AutoTokenizer.from_pretrained(path)
        fe = granite_feature_extractor_class().from_pretrained(path)
        template = _chat_template_file(path) or getattr(tok, "chat_template", None)
        return GraniteSpeechProcessor(audio_processor=fe, tokenizer=tok, chat_template=template)


def _chat_template_file(path: str) -> str | None:
    """The folder's ``chat_template.jinja`` (where transformers saves a processor's template), if any."""
    f = os.path.join(path, "chat_template.jinja")
    if os.path.isfile(f):
        with open(f, encoding="utf-8") as fh:
            return fh.read()
    return None


def _peft_meets_transformers() -> bool:
    """Whether the installed peft is as new as transformers' PEFT integration requires (its enable/disable calls)."""
    from importlib.metadata import version

    from packaging.version import Version
    from transformers.integrations.peft import MIN_PEFT_VERSION

    return Version(version("peft")) >= Version(MIN_PEFT_VERSION)
