"""The audio encoder's MLP neurons as units: a view of an audio adapter whose layers are the encoder's layers.

Whisper-style encoders (Qwen2-Audio, Audio Flamingo 3) hold a plain MLP in each layer (``fc1 -> activation_fn ->
fc2``, directly on the layer). :func:`encoder_lens` wraps the same model with :class:`EncoderView`, so statistics,
selectors, edits and the open trace work on encoder units exactly as on decoder units -- with positions = the
encoder's frames (after its stride-2 convolution; ``valid`` = frames of real audio, padding frames excluded)::

    enc = encoder_lens(lens)                         # same model, encoder units: (layers, d_ffn)
    stats = enc.collect_stats(clips, prompts, emotions)
    ns = find_neurons(stats, "conact", top_frac=0.02)
    SEREvaluator(enc, emotions).run(clips, [Condition.baseline(), *deactivation_conditions(ns)])

Packed encoders (the Qwen2.5-Omni and Qwen3-Omni thinkers' audio towers: the batch's clips are cut into chunks of
``2 * n_window`` feature frames and run as one sequence of frames, ``(frames, d)``, taking the clips' ``feature_lens``) are covered
too: their MLP sites are :class:`PackedSite` s, which hand library operations the value unpacked to
``(clip, frame, neuron)`` (frames of clip ``b`` are contiguous in the packed sequence, in order) and pack edits back,
so statistics, selectors and edits see the same ``(batch, pos, neuron)`` layout as everywhere else; positions are then
the batch's longest clip's frames. Reading such a site's ``.output`` in ``lens.trace`` gives the packed value as the
tower holds it. Another packed tower is refused with one line.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..errors import UnsupportedModelError
from ..sites import Site, _rewrap, _unwrap
from ..vocab import PositionMasks
from .base import Adapter

__all__ = ["ENCODER_MLP_SITES", "EncoderView", "PackedSite", "encoder_lens", "packed_frames"]

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

    def __init__(self, base: Adapter, packed: bool = False, frames: Any = None):
        if base.audio_tower_path is None:
            raise UnsupportedModelError(f"adapter {base.name!r} has no audio encoder")
        self.base, self.packed, self.frames = base, packed, frames  # frames: feature lengths -> encoder frames
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
        n = self.frames(n_feat) if self.packed else torch.where(n_feat > 0, (n_feat - 1) // 2 + 1, 0 * n_feat)
        # a packed encoder's value is unpacked to the batch's longest clip (see PackedSite)
        P = int(n.max()) if self.packed else (fm.shape[1] - 1) // 2 + 1
        valid = torch.arange(P, device=fm.device)[None, :] < n[:, None]
        none = torch.zeros_like(valid)
        return PositionMasks(padding=~valid, special=none, audio=valid, prompt_text=none, prompt_known=False)

    def _extra_special_ids(self) -> list[int]:
        return []

    def __repr__(self) -> str:
        return f"EncoderView({self.base.name}, layers={self.n_layers}, d_mlp={self.d_mlp})"


class PackedSite(Site):
    """An MLP site of a packed encoder: library operations' hooks see its value as ``(clip, frame, neuron)``.

    The tower's ``feature_lens`` (read by a pre-hook on the tower for the hook's lifetime) give each clip's encoder
    frames ``n_b = frames(feature_lens)_b`` (:func:`packed_frames`); clip ``b`` holds packed rows
    ``sum(n_<b) .. sum(n_<=b) - 1``. A hook's replacement is packed back.
    """

    def __init__(self, name: str, envoy: Any, side: str, tower: torch.nn.Module, frames: Any):
        super().__init__(name, envoy, side)
        self.tower, self.frames = tower, frames

    def register(self, fn):
        """Torch hooks calling ``fn`` on the unpacked value at every call of the site's module (a removable handle)."""
        lens_now: dict[str, Tensor] = {}

        def on_tower(_m, args, kwargs):
            fl = kwargs.get("feature_lens", args[1] if len(args) > 1 else None)
            lens_now["valid"] = (torch.arange(int(self.frames(fl).max()), device=fl.device)[None, :]
                                 < self.frames(fl)[:, None])

        def call(packed: Tensor) -> Tensor | None:
            valid = lens_now["valid"].to(packed.device)
            if packed.shape[0] != int(valid.sum()):
                raise UnsupportedModelError(f"{self.name}: {packed.shape[0]} packed frames, the clips' feature "
                                            f"lengths give {int(valid.sum())}")
            full = packed.new_zeros(*valid.shape, packed.shape[-1])
            full[valid] = packed
            new = fn(full)
            return None if new is None and not _changed(full, valid, packed) else (full if new is None else new)[valid]

        mod = self.envoy._module
        handles = [self.tower.register_forward_pre_hook(on_tower, with_kwargs=True)]
        if self.side == "input":
            handles.append(mod.register_forward_pre_hook(
                lambda _m, args: None if (new := call(args[0])) is None else (new, *args[1:])))
        else:
            def out_hook(_m, _args, out):
                new = call(_unwrap(out, self.side))
                return None if new is None else _rewrap(out, self.side, new)
            handles.append(mod.register_forward_hook(out_hook))
        return _Handles(handles)


def packed_frames(tower: torch.nn.Module):
    """``feature_lens -> encoder frames per clip`` of a packed tower, or None for a tower not covered.

    Qwen2.5-Omni: one stride-2 convolution per chunk of ``2 * n_window`` (even) frames, so ``(n - 1) // 2 + 1``;
    Qwen3-Omni: three stride-2 convolutions per chunk (transformers' own ``_get_feat_extract_output_lengths``)."""
    kind = type(tower).__name__
    if kind == "Qwen2_5OmniAudioEncoder":
        return lambda n: torch.where(n > 0, (n - 1) // 2 + 1, torch.zeros_like(n))
    if kind == "Qwen3OmniMoeAudioEncoder":
        from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import _get_feat_extract_output_lengths

        return lambda n: _get_feat_extract_output_lengths(n, tower.n_window)
    return None


def _changed(full: Tensor, valid: Tensor, packed: Tensor) -> bool:
    """Whether a hook edited the unpacked value in place (then the edit is packed back)."""
    return not torch.equal(full[valid], packed)


class _Handles:
    """Several torch hook handles removed as one."""

    def __init__(self, handles: list[Any]):
        self.handles = handles

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def encoder_lens(lens: Any):
    """A :class:`~esn_lens.lens.Lens` over ``lens``'s model whose units are the audio encoder's MLP neurons."""
    from ..lens import Lens

    import inspect

    path = lens.adapter.audio_tower_path
    tower = lens.adapter.root().get_submodule(path) if path else None
    layers = getattr(tower, "layers", None)
    # a packed encoder (one sequence for the whole batch, e.g. Qwen2.5-Omni's) takes the clips' lengths instead
    packed = tower is not None and "feature_lens" in inspect.signature(tower.forward).parameters
    frames = packed_frames(tower) if packed else None
    if packed and frames is None:
        raise UnsupportedModelError(f"{lens.adapter.name}: its packed audio encoder ({type(tower).__name__}) is not "
                                    "covered; encoder units are supported for Qwen2-Audio, Audio Flamingo 3 and "
                                    "the Qwen2.5-Omni / Qwen3-Omni thinkers")
    if not layers or not all(hasattr(layers[0], a) for a, _ in ENCODER_MLP_SITES.values()):
        raise UnsupportedModelError(f"{lens.adapter.name}: no batched Whisper-style encoder layers (fc1, activation_fn, "
                                    f"fc2) at {path}.layers; encoder units are supported for "
                                    "Qwen2-Audio, Audio Flamingo 3 and the Qwen2.5-Omni / Qwen3-Omni thinkers")
    enc = Lens(lens.model, lens.processor, adapter=EncoderView(lens.adapter, packed, frames))
    if packed:  # the MLP sites hand hooks the (clip, frame, neuron) value
        for block in enc.sites.blocks:
            for kind in ENCODER_MLP_SITES:
                st = block.mlp.site(kind)
                enc.sites.sites[st.name] = ps = PackedSite(st.name, st.envoy, st.side, tower, frames)
                setattr(block.mlp, f"hook_{kind}", ps)
    return enc
