"""TransformerLens ``TransformerBridge`` backend.

Build the bridge with ``transformer_lens.model_bridge.sources.build_bridge_from_module`` (never
``TransformerBridge.boot_transformers``, which reaches for the hub and pip-installs torchvision), then
``Lens(bridge, processor)``. Sites are the bridged model's own MLP modules, so values equal those of the
plain model; inputs are built by the wrapped model's own adapter. Generation is not supported here.
At padding positions (attention mask 0) the bridge's values differ from the plain model's (its own attention treats
fully masked rows differently; logits there differed by up to 5.2 in a trial); every non-padding position is equal,
and the library only counts, edits and reads logits at non-padding positions (tests/test_bridge.py).

Example::

    from transformer_lens.model_bridge.sources import build_bridge_from_module
    bridge = build_bridge_from_module(model, "AudioFlamingo3ForConditionalGeneration",
                                      hf_config=model.config, tokenizer=processor.tokenizer)
    lens = Lens(bridge, processor)
"""
from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ..errors import UnsupportedModelError
from .base import ADAPTERS, Adapter, register_adapter


def _inner_adapter(model: nn.Module, processor: Any) -> Adapter:
    """The wrapped model's adapter, used for inputs only (its module tree was rewritten by the bridge)."""
    for key in ADAPTERS.names():
        cls = ADAPTERS.get(key)
        if cls is not TransformerBridgeAdapter and cls.matches(model):
            inner = cls.__new__(cls)
            inner.model, inner.processor = model, processor
            return inner
    raise UnsupportedModelError(f"TransformerBridge wraps {type(model).__name__}, which no esn_lens adapter supports")


@register_adapter("transformer_bridge")
class TransformerBridgeAdapter(Adapter):
    """A TransformerLens 4.x ``TransformerBridge`` around a supported model."""

    layers_path = "blocks"
    lm_head_path = "unembed"
    audio_tower_path = "audio_encoder"
    supports_generate = False
    class_names = ("TransformerBridge",)
    #: a row of docs/models.md (esn_lens.adapters.support)
    support = dict(
        title='TransformerBridge',
        mlp="the bridged model's own MLP modules (values equal the plain model's)",
        audio="as the wrapped model's adapter",
        inputs="the wrapped model's adapter",
        tested='bridges of Qwen2-Audio, Audio Flamingo 3, Music Flamingo, GLM-ASR and Qwen2 (the ones TransformerLens 4.3 '
               'ships for these families): sites, stats and edits equal the HF path',
        limits='no generation (constrained scoring only); build it with build_bridge_from_module (no hub)',
    )

    def __init__(self, model: nn.Module, processor: Any = None):
        original = getattr(model, "original_model", None)
        if original is None:
            raise UnsupportedModelError("TransformerBridge without an original_model")
        self.inner = _inner_adapter(original, processor)
        self.audio_token = self.inner.audio_token
        if not hasattr(model, "audio_encoder"):
            self.audio_tower_path = None
        super().__init__(model, processor)

    @property
    def family(self) -> str:
        return self.inner.name

    @property
    def config(self):
        return getattr(self.model, "original_model", self.model).config

    def layer_path(self, layer: int) -> str:
        return f"blocks.{layer}._original_component"

    def mlp_path(self, layer: int) -> str:
        return f"{self.layer_path(layer)}.mlp._original_component"

    def attn_path(self, layer: int) -> str:
        return f"{self.layer_path(layer)}.self_attn"  # the bridge runs its own attention, not the original's forward

    @property
    def embed_path(self) -> str:
        return "embed._original_component"

    def call_args(self, inputs: dict[str, Tensor]) -> tuple[tuple, dict[str, Tensor]]:
        rest = {k: v for k, v in inputs.items() if k != "input_ids"}
        return (inputs["input_ids"],), {**rest, "return_type": "logits"}

    def build_inputs(self, audios, prompts, *, padding_side: str = "left", system=None):
        return self.inner.build_inputs(audios, prompts, padding_side=padding_side, system=system)

    def position_masks(self, inputs):
        return self.inner.position_masks(inputs)

    @property
    def sampling_rate(self) -> int:
        return self.inner.sampling_rate
