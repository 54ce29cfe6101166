"""Tiny real models of the audio-language families added after the paper's three (one builder per family).

Each builder has :func:`esn_lens.testing.build_tiny`'s signature ``(tokenizer, n_layers, hidden, d_mlp, heads,
kv_heads, encoder hidden, vocab)`` and returns ``(model, processor)`` with random weights.
"""
from __future__ import annotations

from .tiny import CHAT_TEMPLATE, _feature_extractor, _text_dims, _whisper_dims


def music_flamingo(tok, n_layers, hidden, d_mlp, heads, kv_heads, enc_hidden, vocab):
    """``MusicFlamingoForConditionalGeneration`` (AF3 encoder + rotary time embeddings, Qwen2 decoder) and its processor."""
    from transformers import MusicFlamingoConfig, MusicFlamingoForConditionalGeneration, MusicFlamingoProcessor

    tok.add_tokens(["<|sound_bos|>", "<|sound_eos|>"], special_tokens=True)
    cfg = MusicFlamingoConfig(
        audio_config=dict(model_type="audioflamingo3_encoder", **_whisper_dims(enc_hidden)),
        text_config=dict(model_type="qwen2", **_text_dims(n_layers, hidden, d_mlp, vocab, heads, kv_heads)),
        audio_token_id=tok.convert_tokens_to_ids("<sound>"), audio_bos_token_id=tok.convert_tokens_to_ids("<|sound_bos|>"),
        audio_eos_token_id=tok.convert_tokens_to_ids("<|sound_eos|>"))
    proc = MusicFlamingoProcessor(feature_extractor=_feature_extractor(), tokenizer=tok,
                                  chat_template=CHAT_TEMPLATE.replace("AUDIO_PLACEHOLDER", "<sound>"))
    return MusicFlamingoForConditionalGeneration(cfg), proc


def glm_asr(tok, n_layers, hidden, d_mlp, heads, kv_heads, enc_hidden, vocab):
    """``GlmAsrForConditionalGeneration`` (Whisper-style encoder, Llama decoder) and its processor."""
    from transformers import GlmAsrConfig, GlmAsrForConditionalGeneration, GlmAsrProcessor

    tok.add_tokens(["<|pad|>", "<|begin_of_audio|>", "<|end_of_audio|>"], special_tokens=True)
    cfg = GlmAsrConfig(
        audio_config=dict(hidden_size=enc_hidden, intermediate_size=2 * enc_hidden, num_hidden_layers=1,
                          num_attention_heads=2, num_key_value_heads=2, num_mel_bins=128),
        text_config=dict(model_type="llama", **_text_dims(n_layers, hidden, d_mlp, vocab, heads, kv_heads)),
        audio_token_id=tok.convert_tokens_to_ids("<|pad|>"))
    proc = GlmAsrProcessor(feature_extractor=_feature_extractor(), tokenizer=tok,
                           chat_template=CHAT_TEMPLATE.replace("AUDIO_PLACEHOLDER", "<|begin_of_audio|><|pad|><|end_of_audio|>"))
    return GlmAsrForConditionalGeneration(cfg), proc


def qwen3_asr(tok, n_layers, hidden, d_mlp, heads, kv_heads, enc_hidden, vocab):
    """``Qwen3ASRForConditionalGeneration`` (chunked Whisper-style encoder, Qwen3 decoder) and its processor."""
    from transformers import Qwen3ASRConfig, Qwen3ASRForConditionalGeneration, Qwen3ASRProcessor

    cfg = Qwen3ASRConfig(
        audio_config=dict(num_mel_bins=128, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=2 * enc_hidden,
                          d_model=enc_hidden, output_dim=hidden, downsample_hidden_size=8),
        text_config=dict(**_text_dims(n_layers, hidden, d_mlp, vocab, heads, kv_heads), head_dim=hidden // heads),
        audio_token_id=tok.convert_tokens_to_ids("<|AUDIO|>"), pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    proc = Qwen3ASRProcessor(feature_extractor=_feature_extractor(), tokenizer=tok,
                             chat_template=CHAT_TEMPLATE.replace("AUDIO_PLACEHOLDER", "<|audio_bos|><|AUDIO|><|audio_eos|>"))
    return Qwen3ASRForConditionalGeneration(cfg), proc
