"""A speech LoRA that must be on exactly when audio is given (Phi-4-multimodal, Granite Speech): the mix-in that finds
its PEFT layers, attaches a checkpoint's PEFT files and switches the layers per forward.

An adapter sets :attr:`SpeechLoRA.speech_feature_key` (the input that carries audio features) and calls
:meth:`SpeechLoRA.inject_speech_lora` with the folder of the PEFT files when the model has none attached.
"""
from __future__ import annotations

import os

from torch import Tensor, nn

#: the PEFT adapter name the LoRA is attached under
SPEECH = "speech"


class SpeechLoRA:
    """Mix-in for :class:`esn_lens.adapters.base.Adapter`: the speech LoRA is on for inputs with audio, off without."""

    #: the model input whose presence means "audio is given" (e.g. ``"input_features"``)
    speech_feature_key: str = "input_features"
    model: nn.Module

    def _lora_layers(self) -> list[nn.Module]:
        """The decoder's PEFT LoRA layers (empty when no speech LoRA is attached or peft is missing)."""
        try:
            from peft.tuners.tuners_utils import BaseTunerLayer
        except ImportError:
            return []
        return [m for m in self.model.modules() if isinstance(m, BaseTunerLayer)]

    @property
    def has_speech_lora(self) -> bool:
        """Whether a speech LoRA is attached to the decoder (PEFT layers present)."""
        return bool(self._lora_layers())

    def inject_speech_lora(self, folder: str) -> None:
        """Attach the PEFT files in ``folder`` (``adapter_config.json``, ``adapter_model.safetensors``) as the LoRA
        adapter ``"speech"`` (peft must be importable: callers check and name their extra)."""
        from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict
        from safetensors.torch import load_file

        state = {k.removeprefix("base_model.model."): v
                 for k, v in load_file(os.path.join(folder, "adapter_model.safetensors")).items()}
        inject_adapter_in_model(LoraConfig.from_pretrained(folder), self.model, adapter_name=SPEECH)
        set_peft_model_state_dict(self.model, state, adapter_name=SPEECH)
        self.model.to(next(self.model.parameters()).device)

    def call_args(self, inputs: dict[str, Tensor]) -> tuple[tuple, dict[str, Tensor]]:
        """The root's inputs; switches the speech LoRA on when they carry audio features, off otherwise."""
        on = inputs.get(self.speech_feature_key) is not None
        for layer in self._lora_layers():  # one loop over LoRA modules (a few per decoder layer)
            layer.enable_adapters(on)
        return (), inputs
