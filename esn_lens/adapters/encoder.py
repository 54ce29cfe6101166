"""The audio encoder's MLP neurons as units: a view of an audio adapter whose layers are the encoder's layers.

Whisper-style encoders (Qwen2-Audio, Audio Flamingo 3) hold a plain MLP in each layer (``fc1 -> activation_fn ->
fc2``, directly on the layer). :func:`encoder_lens` wraps the same model with :class:`EncoderView`, so statistics,
selectors, edits and the open trace work on encoder units exactly as on decoder units -- with positions = the
encoder's frames (after its stride-2 convolution; ``valid`` = frames of real audio, padding frames excluded)::

    enc = encoder_lens(lens)                         # same model, encoder units: (layers, d_ffn)
    stats = enc.collect_stats(clips, prompts, emotions)
    ns = find_neurons(stats, "conact", top_frac=0.02)
    SEREvaluator(enc, emotions).run(clips, [Condition.baseline(), *deactivation_conditions(ns)])

Not covered: encoders that pack a batch's clips into one sequence (the Qwen2.5-Omni / Qwen3-Omni thinkers' audio
towers): :func:`encoder_lens` refuses them with one line.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..errors import UnsupportedModelError
from ..vocab import PositionMasks
from .base import Adapter

__all__ = ["ENCODER_MLP_SITES", "EncoderView", "encoder_lens"]

#: a Whisper-style encoder layer's MLP: fc1 -> activation_fn -> fc2, on the layer itself
ENCODER_MLP_SITES: dict[str, tuple[str, str]] = {"pre": ("fc1", "output"), "act": ("activation_fn", "output"),
                                                 "post": ("fc2", "input")}
#: input key of each family's per-frame feature mask
_FEATURE_MASKS = ("feature_attention_mask", "input_features_mask")


class EncoderView(Adapter):
    """An audio adapter seen through its encoder: layers = the audio tower's layers, positions = encoder frames.

    Inputs, the chat template and the call are the wrapped adapter's; the logits are the model's as ever.
    """

    name = "encoder"
    mlp_sites = ENCODER_MLP_SITES
    audio_tower_path = None  # the encoder runs in every forward (its output is never reused: edits act inside it)
    embeds_reuse_path = None
    turn_start = turn_end = None

    def __init__(self, base: Adapter):
        if base.audio_tower_path is None:
            raise UnsupportedModelError(f"adapter {base.name!r} has no audio encoder")
        self.base = base
        self.layers_path = f"{base.audio_tower_path}.layers"
        self.lm_head_path = base.lm_head_path
        self.audio_token = base.audio_token
        super().__init__(base.model, base.processor)

    @property
    def family(self) -> str:
        return f"{self.base.family}.encoder"

    def root(self):
        return self.base.root()

    def mlp_path(self, layer: int) -> str:
        return self.layer_path(layer)  # the MLP's modules sit on the encoder layer itself

    @property
    def embed_path(self) -> str:
        return self.base.embed_path

    def call_args(self, inputs):
        return self.base.call_args(inputs)

    def build_inputs(self, audios, prompts, **kw):
        return self.base.build_inputs(audios, prompts, **kw)

    def render_prompt(self, prompt: str, with_audio: bool = True, system: str | None = None) -> str:
        return self.base.render_prompt(prompt, with_audio, system)

    @property
    def sampling_rate(self) -> int:
        return self.base.sampling_rate

    @property
    def tokenizer(self):
        return self.base.tokenizer

    def position_masks(self, inputs: dict[str, Tensor]) -> PositionMasks:
        """Masks over the encoder's frames: a frame is valid when it covers real audio (stride-2 convolution:
        ``n`` feature frames give ``(n - 1) // 2 + 1`` encoder frames); no special, prompt or padding tokens."""
        key = next((k for k in _FEATURE_MASKS if k in inputs), None)
        if key is None:
            raise UnsupportedModelError(f"{self.base.name}: the inputs carry no per-frame feature mask "
                                        f"({' or '.join(_FEATURE_MASKS)}); encoder positions cannot be told")
        fm = inputs[key].bool()
        n_feat = fm.sum(1)
        P = (fm.shape[1] - 1) // 2 + 1
        n = torch.where(n_feat > 0, (n_feat - 1) // 2 + 1, torch.zeros_like(n_feat))
        valid = torch.arange(P, device=fm.device)[None, :] < n[:, None]
        none = torch.zeros_like(valid)
        return PositionMasks(padding=~valid, special=none, audio=valid, prompt_text=none, prompt_known=False)

    def _extra_special_ids(self) -> list[int]:
        return []

    def __repr__(self) -> str:
        return f"EncoderView({self.base.name}, layers={self.n_layers}, d_mlp={self.d_mlp})"


def encoder_lens(lens: Any):
    """A :class:`~esn_lens.lens.Lens` over ``lens``'s model whose units are the audio encoder's MLP neurons."""
    from ..lens import Lens

    import inspect

    path = lens.adapter.audio_tower_path
    tower = lens.adapter.root().get_submodule(path) if path else None
    layers = getattr(tower, "layers", None)
    # a packed encoder (one sequence for the whole batch, e.g. Qwen2.5-Omni's) takes the clips' lengths instead
    packed = tower is not None and "feature_lens" in inspect.signature(tower.forward).parameters
    if packed or not layers or not all(hasattr(layers[0], a) for a, _ in ENCODER_MLP_SITES.values()):
        raise UnsupportedModelError(f"{lens.adapter.name}: no batched Whisper-style encoder layers (fc1, activation_fn, "
                                    f"fc2) at {path}.layers; encoder units are supported for "
                                    "Qwen2-Audio and Audio Flamingo 3 (the Omni thinkers pack clips into one sequence)")
    return Lens(lens.model, lens.processor, adapter=EncoderView(lens.adapter))
