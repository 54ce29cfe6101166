"""Tiny real Gemma 4 models (``build_tiny("gemma4")``, ``build_tiny("gemma4_unified")``): the byte-level tokenizer with
Gemma 4's control tokens, a Gemma 4 chat template, and the audio-only processors. Builders have
:func:`esn_lens.testing.build_tiny`'s signature."""
from __future__ import annotations

from .tiny import _text_dims


#: Gemma 4's chat format: ``<|turn>user\n`` content ``<turn|>\n`` ... ``<|turn>model\n``; an audio part is ``<|audio|>``
GEMMA4_TEMPLATE = (
    "{% for message in messages %}<|turn>{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'audio' %}<|audio|>{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<turn|>\n{% endfor %}{% if add_generation_prompt %}<|turn>model\n{% endif %}"
)
#: Gemma 4's control tokens (the tiny tokenizer's names for its multimodal placeholders)
GEMMA4_TOKENS = dict(audio_token="<|audio|>", boa_token="<|audio>", eoa_token="<audio|>", image_token="<|image|>",
                     boi_token="<|image>", eoi_token="<image|>")


def gemma4(tok, n_layers, hidden, d_mlp, heads, kv_heads, enc_hidden, vocab):
    """``Gemma4ForConditionalGeneration`` with an audio tower and no vision tower, and the audio-only processor.

    The decoder has what the release has: per-layer embeddings (8 per layer), sliding and full attention layers
    (the last full), logit soft-capping at 30, and from 3 layers on KV sharing (the last layer reuses the keys and
    values of the last earlier full-attention layer)."""
    from transformers import Gemma4AudioFeatureExtractor, Gemma4Config, Gemma4ForConditionalGeneration

    from ..adapters.gemma4 import audio_only_gemma4_processor_class

    text = dict(_gemma4_text(tok, n_layers, hidden, d_mlp, heads, kv_heads, vocab), hidden_size_per_layer_input=8,
                vocab_size_per_layer_input=vocab, num_kv_shared_layers=1 if n_layers >= 3 else 0)
    cfg = Gemma4Config(text_config=text, vision_config=None, **_gemma4_ids(tok),
                       audio_config=dict(hidden_size=enc_hidden, num_hidden_layers=1, num_attention_heads=2,
                                         subsampling_conv_channels=[128, 4], output_proj_dims=enc_hidden))
    proc = audio_only_gemma4_processor_class()(feature_extractor=Gemma4AudioFeatureExtractor(), tokenizer=tok,
                                               chat_template=GEMMA4_TEMPLATE)
    return Gemma4ForConditionalGeneration(cfg), proc


def gemma4_unified(tok, n_layers, hidden, d_mlp, heads, kv_heads, enc_hidden, vocab):
    """``Gemma4UnifiedForConditionalGeneration`` (audio tokens are raw 640-sample frames, no encoder; Gemma 4's decoder
    without per-layer embeddings), no vision, and the audio-only processor."""
    from transformers import (Gemma4UnifiedAudioFeatureExtractor, Gemma4UnifiedConfig,
                              Gemma4UnifiedForConditionalGeneration)

    from ..adapters.gemma4 import audio_only_gemma4_unified_processor_class

    cfg = Gemma4UnifiedConfig(text_config=_gemma4_text(tok, n_layers, hidden, d_mlp, heads, kv_heads, vocab),
                              vision_config=None, audio_config=dict(audio_embed_dim=640), **_gemma4_ids(tok))
    proc = audio_only_gemma4_unified_processor_class()(feature_extractor=Gemma4UnifiedAudioFeatureExtractor(),
                                                       tokenizer=tok, chat_template=GEMMA4_TEMPLATE)
    return Gemma4UnifiedForConditionalGeneration(cfg), proc


def _gemma4_text(tok, n_layers, hidden, d_mlp, heads, kv_heads, vocab) -> dict:
    """A tiny Gemma 4 text config (alternating sliding/full attention, the last full; soft-cap 30), with the Gemma 4
    control tokens added to ``tok`` (named, so the processor and a saved tokenizer know them)."""
    tok.add_special_tokens({"additional_special_tokens": ["<|turn>", "<turn|>", *GEMMA4_TOKENS.values()]},
                           replace_extra_special_tokens=False)
    tok._set_model_specific_special_tokens(GEMMA4_TOKENS)  # named (tok.audio_token, ...) and saved with the tokenizer
    types = ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(n_layers)]
    types[-1] = "full_attention"
    return dict(_text_dims(n_layers, hidden, d_mlp, vocab, heads, kv_heads), head_dim=hidden // heads,
                global_head_dim=hidden // heads, layer_types=types, sliding_window=16, final_logit_softcapping=30.0,
                pad_token_id=tok.pad_token_id, eos_token_id=tok.convert_tokens_to_ids("<turn|>"),
                bos_token_id=tok.pad_token_id)


def _gemma4_ids(tok) -> dict:
    """The multimodal token ids of a Gemma 4 config, from the tokenizer of :func:`_gemma4_text`."""
    ids = tok.convert_tokens_to_ids
    return dict(audio_token_id=ids("<|audio|>"), boa_token_id=ids("<|audio>"), eoa_token_index=ids("<audio|>"),
                image_token_id=ids("<|image|>"), boi_token_id=ids("<|image>"), eoi_token_id=ids("<image|>"),
                video_token_id=ids("<|VIDEO|>"), tie_word_embeddings=False)
