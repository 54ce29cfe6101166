"""A tiny real Qwen3-Omni thinker (mixture-of-experts decoder) for tests and tutorials.

``build_tiny("qwen3_omni_moe_thinker")`` builds it with 4 experts, top-2 routing and ``d_mlp // 4`` neurons per
expert (so ``lens.d_mlp == d_mlp``); :func:`build_tiny_moe` chooses the expert count and top-k.
"""
from __future__ import annotations

from typing import Any

import torch

from .tiny import _MOE_SHAPE, build_tiny


def build_tiny_moe(*, n_experts: int = 4, top_k: int = 2, **kwargs) -> tuple[Any, Any]:
    """``build_tiny("qwen3_omni_moe_thinker", **kwargs)`` with ``n_experts`` experts and top-``top_k`` routing."""
    _MOE_SHAPE[:] = [n_experts, top_k]
    try:
        return build_tiny("qwen3_omni_moe_thinker", **kwargs)
    finally:
        _MOE_SHAPE[:] = [4, 2]


#: cue word of each emotion in the planted MoE model's prompts
MOE_CUES = {"angry": "grr", "happy": "yay", "neutral": "meh", "sad": "sob"}


def build_planted_moe(emotions: tuple[str, ...] = ("angry", "happy", "neutral", "sad"), *, units_per_emotion: int = 2,
                      seed: int = 0) -> tuple[Any, Any, dict[str, list[tuple[int, int]]]]:
    """The tiny Qwen3-Omni thinker (6 experts, top-2, 2 layers, 16 neurons per expert) with planted expert units.

    Prompts carry their emotion's cue word (:data:`MOE_CUES`). The router of layer 0 sends every cue token of
    emotion ``e`` to expert ``e`` (emotion-sensitive experts 0..3), other tokens by token identity; in expert ``e``,
    ``units_per_emotion`` planted units fire (act > 0) on those cue tokens and on no other token; every other expert
    unit reads a constant direction and fires on nearly every token routed to it. Layer 1 routes every token to
    experts 2 and 3.
    Returns ``(model, processor, planted)`` with ``planted[emotion]`` = list of (layer, unit) units.
    Example: ``model, proc, planted = build_planted_moe(); planted["angry"] == [(0, 0), (0, 1)]``.
    """
    E = len(emotions)
    model, proc = build_tiny_moe(n_experts=6, top_k=2, d_mlp=96, seed=seed, extra_words=[MOE_CUES[e] for e in emotions])
    if E > 4 or units_per_emotion > 16:
        raise ValueError("at most 4 emotions and 16 units per emotion")
    text = model.model.language_model
    tok = proc.tokenizer
    CONST, CUE = 0, 1
    planted: dict[str, list[tuple[int, int]]] = {}
    with torch.no_grad():
        emb = text.embed_tokens.weight
        emb[:, CONST] = 1.0
        emb[:, CUE:CUE + E] = 0.0
        for e, emo in enumerate(emotions):
            emb[tok.convert_tokens_to_ids(MOE_CUES[emo]), CUE + e] = 4.0
        for li, layer in enumerate(text.layers):
            layer.self_attn.o_proj.weight[:CUE + E] = 0.0  # nothing writes the constant and cue directions
            if li == 0:  # layer 0's MoE sees each token's own embedding: routing depends on the token alone
                layer.self_attn.o_proj.weight.zero_()
            ex = layer.mlp.experts
            I = ex.intermediate_dim
            ex.down_proj[:, :CUE + E] = 0.0
            ex.gate_up_proj[:, :I, CONST] = 3.0  # every unit fires on (nearly) every token routed to it
            ex.gate_up_proj[:, :I, CUE:CUE + E] = 0.0
            router = layer.mlp.gate.weight
            router[:, :CUE + E] = 0.0  # layer 0 routes other tokens by their (emotion-neutral) identity
            if li != 0:
                router.zero_()
                router[2, CONST], router[3, CONST] = 2.0, 1.5  # every token: experts 2 and 3
                continue
            for e, emo in enumerate(emotions):
                router[e, CUE + e] = 50.0  # cue tokens of emotion e go to expert e
                units = list(range(units_per_emotion))
                planted[emo] = [(0, e * I + j) for j in units]
                for j in units:
                    ex.gate_up_proj[e, j] = 0.0
                    ex.gate_up_proj[e, j, CUE + e] = 5.0  # fires exactly on emotion e's cue tokens
    return model, proc, planted


def planted_moe_prompts(emotion: str, n: int = 2) -> list[str]:
    """``n`` prompts of ``emotion`` for :func:`build_planted_moe` (the cue word several times, then a question)."""
    cue = MOE_CUES[emotion]
    return [" ".join([cue] * (3 + i)) + " how do I sound?" for i in range(n)]
