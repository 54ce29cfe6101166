"""Qwen3-Omni (MoE): the thinker (``Qwen3OmniMoeThinkerForConditionalGeneration``), and the full model through it.

Every decoder layer's MLP is a sparse MoE block (router ``gate``, fused ``experts``). The units of a layer are its
(expert, neuron) pairs, flattened ``expert * moe_intermediate_size + neuron``, so ``d_mlp = n_experts *
moe_intermediate_size``; the sites ``hook_pre``/``hook_act``/``hook_post`` are the dense per-expert views of
:mod:`esn_lens.moe` (the adapter switches the layers to esn_lens's exact per-expert path once, with a log line).
The processor is transformers' ``Qwen3OmniMoeProcessor`` without image/video processors (no torchvision).
"""
from __future__ import annotations

import functools
from typing import Any

from torch import nn

from ..errors import InputError, UnsupportedModelError
from ..moe import install_exact_moe, is_moe_block
from ..vocab import check_site
from .base import Adapter, register_adapter
from .qwen_omni import audio_only_processor_class


@functools.lru_cache(maxsize=None)
def audio_only_qwen3_omni_processor_class() -> type:
    """The class ``AudioOnlyQwen3OmniProcessor``, built on first use (transformers' processor imports are slow)."""
    from transformers import Qwen3OmniMoeProcessor

    return audio_only_processor_class(Qwen3OmniMoeProcessor, "AudioOnlyQwen3OmniProcessor", __name__)


@register_adapter("qwen3_omni_moe")
class Qwen3OmniMoeAdapter(Adapter):
    """Qwen3-Omni-30B-A3B thinker (and ``Qwen3OmniMoeForConditionalGeneration`` through ``.thinker``): expert units."""

    layers_path = "model.language_model.layers"
    audio_token = "<|audio_pad|>"
    audio_tower_path = "model.audio_tower"
    class_names = ("Qwen3OmniMoeThinkerForConditionalGeneration", "Qwen3OmniMoeForConditionalGeneration")
    model_types = ("qwen3_omni_moe_thinker", "qwen3_omni_moe")
    #: units are routed: a unit's tokens are those routed to its expert (routing-aware statistics)
    routed = True
    #: a row of docs/models.md (esn_lens.adapters.support)
    support = dict(
        title="Qwen3-Omni (MoE)",
        mlp="sparse MoE: units = (expert, neuron), `expert * moe_intermediate + neuron`; pre/act/post = dense views of "
            "esn_lens's exact per-expert path (0 where not routed); routing sites `mlp.hook_route` / `hook_router`",
        audio="the tokenizer's audio token ids (`<|audio_pad|>`, 13 per second)",
        inputs="audio-only Qwen3-Omni processor (no torchvision) + chat template",
        tested="tiny real thinker (4 experts, top-2): routed K/T/sums, routing counts, edits (forward, generation), "
               "planted units and experts vs a plain-torch experts loop; full model through `.thinker`; `esn-lens run`",
        limits="every layer sparse (no `mlp_only_layers`); dense views cost (tokens x units) per layer; text answers only",
    )

    def __init__(self, model: nn.Module, processor: Any = None):
        super().__init__(model, processor)
        blocks = [self.mlp_module(i) for i in range(len(self.layers()))]
        tok_audio = getattr(self.tokenizer, "audio_token", None) if processor is not None else None
        if isinstance(tok_audio, str):
            self.audio_token = tok_audio  # the checkpoint's own audio placeholder (``<|audio_pad|>`` in Qwen3-Omni)
        install_exact_moe(blocks, type(model).__name__)

    def root(self) -> nn.Module:
        # the thinker is the text-producing model (the full model's forward also runs talker/code2wav)
        return getattr(self.model, "thinker", self.model)

    @classmethod
    def load_processor(cls, path: str, trust_remote_code: bool = False) -> Any:
        """The audio-only Qwen3-Omni processor (transformers' own needs image/video processors, hence torchvision)."""
        return audio_only_qwen3_omni_processor_class().from_pretrained(path)

    # -------------------------------------------------------------- expert units
    @property
    def n_experts(self) -> int:
        """Experts per MoE layer."""
        return int(self.mlp_module(0).experts.num_experts)

    @property
    def d_expert(self) -> int:
        """Neurons per expert (``moe_intermediate_size``)."""
        return int(self.mlp_module(0).experts.intermediate_dim)

    @property
    def top_k(self) -> int:
        """Experts routed per token."""
        return int(self.mlp_module(0).gate.top_k)

    def check_mlp(self) -> None:
        """Every layer must be a sparse MoE block (router + fused experts)."""
        dense = [i for i in range(len(self.layers())) if not is_moe_block(self.mlp_module(i))]
        if dense:
            raise UnsupportedModelError(f"{type(self.model).__name__}: layers {dense} have a dense MLP (mlp_only_layers / "
                                        "decoder_sparse_step); esn_lens supports Qwen3-Omni with every layer sparse")

    @property
    def d_mlp(self) -> int:
        return self.n_experts * self.d_expert


    def site_path(self, layer: int, site: str) -> tuple[str, str]:
        """Expert unit sites are the dense views of the exact per-expert path (hook points under ``mlp.experts``)."""
        if not 0 <= layer < self.n_layers:
            raise InputError(f"layer {layer} out of range 0..{self.n_layers - 1}")
        return f"{self.mlp_path(layer)}.experts.hook_{check_site(site)}", "output"

    def layer_site_rows(self, layer: int) -> list:
        """The dense-model rows plus the routing sites ``blocks.{l}.mlp.hook_router`` / ``mlp.hook_route`` (before
        the unit sites, in forward order) for adapters with a site table."""
        rows = list(super().layer_site_rows(layer))  # type: ignore[misc]
        row = type(rows[0])
        at = next(i for i, r in enumerate(rows) if r.name.endswith(".mlp.hook_pre"))
        extra = [row(f"blocks.{layer}.mlp.hook_{w}", self.route_path(layer, w), "output") for w in ("router", "route")]
        return rows[:at] + extra + rows[at:]

    def route_path(self, layer: int, which: str = "route") -> str:
        """Dotted path of a layer's routing site: ``"route"`` (top-k weights) or ``"router"`` (probabilities)."""
        if which not in ("route", "router"):
            raise InputError(f"routing site must be 'route' or 'router', got {which!r}")
        return f"{self.mlp_path(layer)}.hook_{which}"
