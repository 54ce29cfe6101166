"""A tiny real Qwen3-Omni thinker (mixture-of-experts decoder) for tests and tutorials.

``build_tiny("qwen3_omni_moe_thinker")`` builds it with 4 experts, top-2 routing and ``d_mlp // 4`` neurons per
expert (so ``lens.d_mlp == d_mlp``); :func:`build_tiny_moe` chooses the expert count and top-k.
"""
from __future__ import annotations

from typing import Any

import torch

#: (experts, top-k) of the next tiny MoE build (``build_tiny_moe`` sets them per call)
_MOE_SHAPE = [4, 2]


def _audio_only_processor(tok):
    from ..adapters.qwen3_omni_moe import audio_only_qwen3_omni_processor_class
    from .tiny import CHAT_TEMPLATE, _feature_extractor

    return audio_only_qwen3_omni_processor_class()(
        feature_extractor=_feature_extractor(), tokenizer=tok,
        chat_template=CHAT_TEMPLATE.replace("AUDIO_PLACEHOLDER", "<|audio_bos|><|AUDIO|><|audio_eos|>"))


def qwen3_omni_moe_thinker(tok, n_layers, hidden, d_mlp, heads, kv_heads, enc_hidden, vocab) -> tuple[Any, Any]:
    """The tiny-family builder (see :data:`esn_lens.testing.tiny.TINY_FAMILIES`)."""
    from transformers import Qwen3OmniMoeThinkerConfig, Qwen3OmniMoeThinkerForConditionalGeneration

    from .tiny import _text_dims, _whisper_dims

    n_experts, top_k = _MOE_SHAPE
    if d_mlp % n_experts:
        raise ValueError(f"d_mlp={d_mlp} must be a multiple of the expert count {n_experts}")
    head_dim = hidden // heads
    half = head_dim // 2
    mrope = [half - 2 * (half // 4), half // 4, half // 4]
    text = _text_dims(n_layers, hidden, d_mlp, vocab, heads, kv_heads)
    text.update(num_experts=n_experts, num_experts_per_tok=top_k, moe_intermediate_size=d_mlp // n_experts,
                norm_topk_prob=True, head_dim=head_dim, decoder_sparse_step=1, mlp_only_layers=[],
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope,
                                 "interleaved": True})
    ids = tok.convert_tokens_to_ids
    cfg = Qwen3OmniMoeThinkerConfig(
        audio_config=dict(**_whisper_dims(enc_hidden), output_dim=hidden, n_window=50, max_source_positions=1500,
                          downsample_hidden_size=16),
        vision_config=dict(depth=1, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=hidden,
                           deepstack_visual_indexes=[]),
        text_config=text,
        audio_token_id=ids("<|AUDIO|>"), image_token_id=ids("<|IMAGE|>"), video_token_id=ids("<|VIDEO|>"),
        audio_start_token_id=ids("<|audio_bos|>"), audio_end_token_id=ids("<|audio_eos|>"),
        vision_start_token_id=ids("<|vision_bos|>"),
    )
    model = Qwen3OmniMoeThinkerForConditionalGeneration(cfg)
    with torch.no_grad():  # spread the routing (a near-zero router sends every token to the same experts)
        for layer in model.model.language_model.layers:
            layer.mlp.gate.weight.normal_(0.0, 0.5)
    return model, _audio_only_processor(tok)


def build_tiny_moe(*, n_experts: int = 4, top_k: int = 2, **kwargs) -> tuple[Any, Any]:
    """``build_tiny("qwen3_omni_moe_thinker", **kwargs)`` with ``n_experts`` experts and top-``top_k`` routing."""
    from .tiny import build_tiny

    _MOE_SHAPE[:] = [n_experts, top_k]
    try:
        return build_tiny("qwen3_omni_moe_thinker", **kwargs)
    finally:
        _MOE_SHAPE[:] = [4, 2]
