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


def _tekken_file(path, n_special: int = 40) -> str:
    """A byte-level Tekken tokenizer file (mistral_common's format) with Voxtral's special-token ranks and audio config:
    ids 0..n_special-1 are the control tokens (``[AUDIO]`` = 24, ``[BEGIN_AUDIO]`` = 25), then the 256 bytes."""
    import base64
    import json

    from mistral_common.tokens.tokenizers.base import SpecialTokens as S

    order = (S.unk, S.bos, S.eos, S.begin_inst, S.end_inst, S.begin_tools, S.end_tools, S.begin_tool_results,
             S.end_tool_results, S.tool_calls, S.img, S.pad, S.img_break, S.img_end, S.prefix, S.middle, S.suffix,
             S.begin_system, S.end_system, S.begin_tool_content)
    named = dict(enumerate(order)) | {24: S.audio, 25: S.begin_audio, 32: S.args, 33: S.call_id, 34: S.transcribe}
    specials = [dict(rank=i, token_str=str(getattr(named.get(i), "value", f"<SPECIAL_{i}>")), is_control=True)
                for i in range(n_special)]
    pattern = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?"
               r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|"
               r"\s+(?!\S)|\s+")
    data = dict(config=dict(pattern=pattern, num_vocab_tokens=256, default_vocab_size=256 + n_special,
                            default_num_special_tokens=n_special, version="v7"),
                vocab=[dict(rank=i, token_bytes=base64.b64encode(bytes([i])).decode(), token_str=None) for i in range(256)],
                special_tokens=specials,
                audio=dict(sampling_rate=16000, frame_rate=12.5, chunk_length_s=30.0,
                           audio_encoding_config=dict(num_mel_bins=128, hop_length=160, window_size=400)))
    with open(path, "w") as f:
        json.dump(data, f)
    return str(path)


def voxtral(tok, n_layers, hidden, d_mlp, heads, kv_heads, enc_hidden, vocab):
    """``VoxtralForConditionalGeneration`` (Whisper-style encoder, 4-frame projector, Llama decoder) and its processor
    (a ``MistralCommonBackend`` over a tiny Tekken file written to a temporary folder: mistral_common's own prompt
    format, 375 ``[AUDIO]`` tokens per 30 s chunk). The byte-level Qwen2 tokenizer ``tok`` is not used."""
    import tempfile

    from transformers import (MistralCommonBackend, VoxtralConfig, VoxtralForConditionalGeneration, VoxtralProcessor,
                              WhisperFeatureExtractor)

    folder = tempfile.mkdtemp(prefix="esn_lens_tekken_")
    mtok = MistralCommonBackend(_tekken_file(f"{folder}/tekken.json"))
    cfg = VoxtralConfig(
        audio_config=dict(hidden_size=enc_hidden, intermediate_size=4 * enc_hidden, num_hidden_layers=1,
                          num_attention_heads=2, num_mel_bins=128),
        text_config=dict(model_type="llama", **_text_dims(n_layers, hidden, d_mlp, vocab, heads, kv_heads),
                         head_dim=hidden // heads),
        audio_token_id=24)
    proc = VoxtralProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=128), tokenizer=mtok)
    return VoxtralForConditionalGeneration(cfg), proc
