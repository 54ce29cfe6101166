"""Build tiny, real, randomly initialised LALMs with in-process tokenizers and feature extractors.

Every family uses the real transformers class (e.g. ``Qwen2AudioForConditionalGeneration``) with a
tiny config, a byte-level ``Qwen2Tokenizer`` built from a vocab dict, and a
``WhisperFeatureExtractor``; deterministic by seed. Nothing is downloaded.

Example::

    model, processor = build_tiny("qwen2_audio", seed=0)
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch

#: ChatML template with audio parts rendered as the family's audio placeholder (set per processor).
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'audio' %}AUDIO_PLACEHOLDER"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

BASE_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|audio_bos|>", "<|AUDIO|>", "<|audio_eos|>", "<sound>",
                 "<|IMAGE|>", "<|VIDEO|>", "<|vision_bos|>", "<|vision_eos|>"]


def build_tokenizer(extra_words: Sequence[str] = (), vocab_size: int = 320):
    """A byte-level Qwen2 tokenizer: 256 byte symbols, the chat/audio special tokens and optional whole words.

    ``extra_words`` (e.g. emotion names) become single tokens. Example: ``build_tokenizer(["angry"])``.
    """
    from transformers import Qwen2Tokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    symbols = sorted(bytes_to_unicode().values(), key=ord)
    vocab = {s: i for i, s in enumerate(symbols)}
    for sp in BASE_SPECIALS:
        vocab[sp] = len(vocab)
    tok = Qwen2Tokenizer(
        vocab=vocab, merges=[], unk_token=None, bos_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        extra_special_tokens={"audio_token": "<|AUDIO|>", "audio_bos_token": "<|audio_bos|>",
                              "audio_eos_token": "<|audio_eos|>", "image_token": "<|IMAGE|>", "video_token": "<|VIDEO|>",
                              "vision_bos_token": "<|vision_bos|>", "vision_eos_token": "<|vision_eos|>"},
    )
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<sound>"]})
    if extra_words:
        tok.add_tokens([w for w in extra_words])
    if len(tok) > vocab_size:
        raise ValueError(f"tokenizer has {len(tok)} tokens, more than vocab_size={vocab_size}")
    return tok


def _feature_extractor():
    from transformers import WhisperFeatureExtractor

    return WhisperFeatureExtractor(feature_size=128)


def _text_dims(n_layers: int, hidden: int, d_mlp: int, vocab: int, heads: int, kv_heads: int) -> dict[str, Any]:
    return dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=d_mlp, num_hidden_layers=n_layers,
                num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=4096,
                tie_word_embeddings=False)


#: number of audio-encoder layers of tiny models (build_tiny(encoder_layers=...) sets it per call)
_ENCODER_LAYERS = [1]


def _whisper_dims(enc_hidden: int) -> dict[str, Any]:
    return dict(num_mel_bins=128, encoder_layers=_ENCODER_LAYERS[0], encoder_attention_heads=2,
                encoder_ffn_dim=enc_hidden * 2, d_model=enc_hidden)


def _qwen2_audio(tok, n_layers, hidden, d_mlp, heads, kv_heads, enc_hidden, vocab):
    from transformers import Qwen2AudioConfig, Qwen2AudioForConditionalGeneration, Qwen2AudioProcessor

    cfg = Qwen2AudioConfig(
        audio_config=dict(model_type="qwen2_audio_encoder", **_whisper_dims(enc_hidden)),
        text_config=dict(model_type="qwen2", **_text_dims(n_layers, hidden, d_mlp, vocab, heads, kv_heads)),
        audio_token_index=tok.convert_tokens_to_ids("<|AUDIO|>"),
    )
    model = Qwen2AudioForConditionalGeneration(cfg)
    proc = Qwen2AudioProcessor(feature_extractor=_feature_extractor(), tokenizer=tok,
                               chat_template=CHAT_TEMPLATE.replace("AUDIO_PLACEHOLDER", "<|audio_bos|><|AUDIO|><|audio_eos|>"))
    return model, proc


def _omni_thinker_config(tok, n_layers, hidden, d_mlp, heads, kv_heads, enc_hidden, vocab):
    from transformers import Qwen2_5OmniThinkerConfig

    head_dim = hidden // heads
    half = head_dim // 2
    mrope = [half - 2 * (half // 4), half // 4, half // 4]
    return Qwen2_5OmniThinkerConfig(
        audio_config=dict(**_whisper_dims(enc_hidden), output_dim=hidden, n_window=50, max_source_positions=1500),
        vision_config=dict(depth=1, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=hidden,
                           fullatt_block_indexes=[0]),
        text_config=dict(**_text_dims(n_layers, hidden, d_mlp, vocab, heads, kv_heads),
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope}),
        audio_token_id=tok.convert_tokens_to_ids("<|AUDIO|>"),
        image_token_id=tok.convert_tokens_to_ids("<|IMAGE|>"),
        video_token_id=tok.convert_tokens_to_ids("<|VIDEO|>"),
        audio_start_token_id=tok.convert_tokens_to_ids("<|audio_bos|>"),
        audio_end_token_id=tok.convert_tokens_to_ids("<|audio_eos|>"),
        vision_start_token_id=tok.convert_tokens_to_ids("<|vision_bos|>"),
        vision_end_token_id=tok.convert_tokens_to_ids("<|vision_eos|>"),
    )


def _omni_processor(tok):
    from ..adapters.qwen_omni import AudioOnlyOmniProcessor

    return AudioOnlyOmniProcessor(feature_extractor=_feature_extractor(), tokenizer=tok,
                                  chat_template=CHAT_TEMPLATE.replace("AUDIO_PLACEHOLDER", "<|audio_bos|><|AUDIO|><|audio_eos|>"))


def _qwen2_5_omni_thinker(tok, *dims):
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

    return Qwen2_5OmniThinkerForConditionalGeneration(_omni_thinker_config(tok, *dims)), _omni_processor(tok)


def _audio_flamingo3(tok, n_layers, hidden, d_mlp, heads, kv_heads, enc_hidden, vocab):
    from transformers import AudioFlamingo3Config, AudioFlamingo3ForConditionalGeneration, AudioFlamingo3Processor

    cfg = AudioFlamingo3Config(
        audio_config=dict(**_whisper_dims(enc_hidden)),
        text_config=dict(model_type="qwen2", **_text_dims(n_layers, hidden, d_mlp, vocab, heads, kv_heads)),
        audio_token_id=tok.convert_tokens_to_ids("<sound>"),
    )
    model = AudioFlamingo3ForConditionalGeneration(cfg)
    proc = AudioFlamingo3Processor(feature_extractor=_feature_extractor(), tokenizer=tok,
                                   chat_template=CHAT_TEMPLATE.replace("AUDIO_PLACEHOLDER", "<sound>"))
    return model, proc


def _qwen2_lm(tok, n_layers, hidden, d_mlp, heads, kv_heads, enc_hidden, vocab):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok.chat_template = CHAT_TEMPLATE.replace("AUDIO_PLACEHOLDER", "")
    return Qwen2ForCausalLM(Qwen2Config(**_text_dims(n_layers, hidden, d_mlp, vocab, heads, kv_heads))), tok


def _llama_lm(tok, n_layers, hidden, d_mlp, heads, kv_heads, enc_hidden, vocab):
    from transformers import LlamaConfig, LlamaForCausalLM

    tok.chat_template = CHAT_TEMPLATE.replace("AUDIO_PLACEHOLDER", "")
    return LlamaForCausalLM(LlamaConfig(**_text_dims(n_layers, hidden, d_mlp, vocab, heads, kv_heads))), tok


def _lazy(module: str, name: str) -> Callable[..., tuple[Any, Any]]:
    """A builder that lives in its own module of esn_lens.testing (imported when called)."""
    def build(*args):
        import importlib

        return getattr(importlib.import_module(f"{__package__}.{module}"), name)(*args)
    return build


#: (experts, top-k) of the next tiny MoE build (``build_tiny_moe`` sets them per call)
_MOE_SHAPE = [4, 2]


def _audio_only_qwen3_processor(tok):
    from ..adapters.qwen3_omni_moe import audio_only_qwen3_omni_processor_class

    return audio_only_qwen3_omni_processor_class()(
        feature_extractor=_feature_extractor(), tokenizer=tok,
        chat_template=CHAT_TEMPLATE.replace("AUDIO_PLACEHOLDER", "<|audio_bos|><|AUDIO|><|audio_eos|>"))


def _qwen3_omni_moe_thinker(tok, n_layers, hidden, d_mlp, heads, kv_heads, enc_hidden, vocab):
    """The Qwen3-Omni thinker: a mixture-of-experts decoder (``_MOE_SHAPE`` experts and top-k, ``d_mlp // experts``
    neurons per expert, so ``lens.d_mlp == d_mlp``)."""
    from transformers import Qwen3OmniMoeThinkerConfig, Qwen3OmniMoeThinkerForConditionalGeneration

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
    return model, _audio_only_qwen3_processor(tok)


#: family name -> builder(tokenizer, n_layers, hidden, d_mlp, heads, kv_heads, encoder hidden, vocab).
TINY_FAMILIES: dict[str, Callable[..., tuple[Any, Any]]] = {
    "qwen2_audio": _qwen2_audio,
    "qwen2_5_omni_thinker": _qwen2_5_omni_thinker,
    "audio_flamingo3": _audio_flamingo3,
    "qwen2": _qwen2_lm,
    "llama": _llama_lm,
    "kimi_audio": _lazy("kimia_toolkit", "build_tiny_kimia"),
    "music_flamingo": _lazy("tiny_families", "music_flamingo"),
    "glm_asr": _lazy("tiny_families", "glm_asr"),
    "qwen3_asr": _lazy("tiny_families", "qwen3_asr"),
    "voxtral": _lazy("tiny_families", "voxtral"),
    "phi4_multimodal": _lazy("tiny_families", "phi4_multimodal"),
    "granite_speech": _lazy("tiny_families", "granite_speech"),
    "gemma3n": _lazy("tiny_families", "gemma3n"),
    "qwen3_omni_moe_thinker": _qwen3_omni_moe_thinker,
    "gemma4": _lazy("tiny_gemma4", "gemma4"),
    "gemma4_unified": _lazy("tiny_gemma4", "gemma4_unified"),
    "moss_transcribe_diarize": _lazy("tiny_moss", "moss_transcribe_diarize"),
}


def build_tiny(family: str = "qwen2_audio", *, seed: int = 0, n_layers: int = 2, hidden: int = 32, d_mlp: int = 64,
               heads: int = 2, kv_heads: int = 1, encoder_hidden: int = 32, encoder_layers: int = 1,
               vocab_size: int = 320, extra_words: Sequence[str] = ()) -> tuple[Any, Any]:
    """Build ``(model, processor)`` of a tiny real model of ``family`` with random weights (seeded).

    For text-only families the "processor" is the tokenizer. The model is in eval mode, float32.
    """
    if family not in TINY_FAMILIES:
        raise KeyError(f"unknown tiny family {family!r}; known: {sorted(TINY_FAMILIES)}")
    torch.manual_seed(seed)
    tok = build_tokenizer(extra_words, vocab_size)
    _ENCODER_LAYERS[0] = encoder_layers
    try:
        model, proc = TINY_FAMILIES[family](tok, n_layers, hidden, d_mlp, heads, kv_heads, encoder_hidden, vocab_size)
    finally:
        _ENCODER_LAYERS[0] = 1
    return model.eval(), proc


def tiny_audio(seconds: float = 0.5, rate: int = 16000, freq: float = 220.0, seed: int = 0) -> np.ndarray:
    """A deterministic test tone with a little noise, mono float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
