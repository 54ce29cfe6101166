"""A tiny real MOSS-Transcribe-Diarize model (``build_tiny("moss_transcribe_diarize")``); the builder has
:func:`esn_lens.testing.build_tiny`'s signature."""
from __future__ import annotations

from .tiny import CHAT_TEMPLATE, _text_dims


def moss_transcribe_diarize(tok, n_layers, hidden, d_mlp, heads, kv_heads, enc_hidden, vocab):
    """``MossTranscribeDiarizeForConditionalGeneration`` (Whisper-style encoder, 4-frame projector, Qwen3 decoder) and
    its processor (time markers every 2 s of audio, as the release's)."""
    from transformers import (MossTranscribeDiarizeConfig, MossTranscribeDiarizeFeatureExtractor,
                              MossTranscribeDiarizeForConditionalGeneration, MossTranscribeDiarizeProcessor)

    cfg = MossTranscribeDiarizeConfig(
        audio_config=dict(num_mel_bins=80, num_hidden_layers=1, num_attention_heads=2, intermediate_size=2 * enc_hidden,
                          hidden_size=enc_hidden),
        text_config=dict(model_type="qwen3", **_text_dims(n_layers, hidden, d_mlp, vocab, heads, kv_heads),
                         head_dim=hidden // heads),
        audio_token_id=tok.convert_tokens_to_ids("<|AUDIO|>"))
    proc = MossTranscribeDiarizeProcessor(
        feature_extractor=MossTranscribeDiarizeFeatureExtractor(), tokenizer=tok, audio_token="<|AUDIO|>",
        audio_bos_token="<|audio_bos|>", audio_eos_token="<|audio_eos|>",
        chat_template=CHAT_TEMPLATE.replace("AUDIO_PLACEHOLDER", "<|audio_bos|><|AUDIO|><|audio_eos|>"))
    return MossTranscribeDiarizeForConditionalGeneration(cfg), proc
