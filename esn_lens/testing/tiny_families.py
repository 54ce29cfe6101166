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


#: Phi-4-multimodal's chat format: ``<|user|>`` content ``<|end|>`` ... ``<|assistant|>`` (no role names, no newlines)
PHI4_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'audio' %}<|AUDIO|>{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|end|>{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def phi4_multimodal(tok, n_layers, hidden, d_mlp, heads, kv_heads, enc_hidden, vocab):
    """``Phi4MultimodalForCausalLM`` (conformer speech encoder, Phi-3 decoder with fused ``gate_up_proj``) with a
    random speech LoRA attached as the PEFT adapter ``"speech"`` (active), and the audio-only processor."""
    from peft import LoraConfig, inject_adapter_in_model
    from transformers import Phi4MultimodalConfig, Phi4MultimodalFeatureExtractor, Phi4MultimodalForCausalLM

    from ..adapters.phi4_multimodal import audio_only_phi4_processor_class

    tok.add_special_tokens({"additional_special_tokens": ["<|user|>", "<|end|>", "<|assistant|>", "<|system|>"]},
                           replace_extra_special_tokens=False)
    dims = _text_dims(n_layers, hidden, d_mlp, vocab, heads, kv_heads)
    cfg = Phi4MultimodalConfig(
        **dims, original_max_position_embeddings=4096, pad_token_id=tok.pad_token_id, bos_token_id=tok.pad_token_id,
        eos_token_id=tok.convert_tokens_to_ids("<|end|>"),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=28, patch_size=14, crop_size=28, image_token_id=tok.image_token_id),
        audio_config=dict(hidden_size=enc_hidden, intermediate_size=2 * enc_hidden, num_blocks=1, num_attention_heads=2,
                          ext_pw_out_channel=enc_hidden, depthwise_separable_out_channel=enc_hidden,
                          nemo_conv_channels=enc_hidden, input_size=80, audio_token_id=tok.audio_token_id))
    model = Phi4MultimodalForCausalLM(cfg)
    lora = LoraConfig(r=4, lora_alpha=8, init_lora_weights=False, target_modules=r"model\.layers\.\d+\.(self_attn\.(qkv_proj|o_proj)|mlp\.(gate_up_proj|down_proj))")
    inject_adapter_in_model(lora, model, adapter_name="speech")
    model.speech_lora_config = lora  # what save_phi4_folder writes as speech-lora/adapter_config.json
    proc = audio_only_phi4_processor_class()(audio_processor=Phi4MultimodalFeatureExtractor(), tokenizer=tok,
                                             chat_template=PHI4_TEMPLATE)
    return model, proc


def save_phi4_folder(model, processor, path) -> None:
    """Write a Phi-4-multimodal checkpoint folder as the release lays it out: base weights in ``path`` and the
    speech LoRA (PEFT format) in ``path/speech-lora``."""
    from pathlib import Path

    from safetensors.torch import save_file

    from peft import get_peft_model_state_dict

    path = Path(path)
    (path / "speech-lora").mkdir(parents=True, exist_ok=True)
    model.speech_lora_config.save_pretrained(path / "speech-lora")
    lora = get_peft_model_state_dict(model, adapter_name="speech")
    save_file({f"base_model.model.{k}": v.contiguous() for k, v in lora.items()},
              str(path / "speech-lora" / "adapter_model.safetensors"), metadata={"format": "pt"})
    base = {k.replace(".base_layer.", "."): v.contiguous() for k, v in model.state_dict().items() if ".lora_" not in k}
    save_file(base, str(path / "model.safetensors"), metadata={"format": "pt"})
    model.config.save_pretrained(path)
    processor.save_pretrained(path)


#: Granite's chat format (string content, as the release's template takes it): ``<|start_of_role|>user<|end_of_role|>``
#: content ``<|end_of_text|>`` ... ``<|start_of_role|>assistant<|end_of_role|>``
GRANITE_TEMPLATE = (
    "{% for message in messages %}<|start_of_role|>{{ message['role'] }}<|end_of_role|>{{ message['content'] }}"
    "<|end_of_text|>\n{% endfor %}{% if add_generation_prompt %}<|start_of_role|>assistant<|end_of_role|>{% endif %}"
)


def granite_speech(tok, n_layers, hidden, d_mlp, heads, kv_heads, enc_hidden, vocab):
    """``GraniteSpeechForConditionalGeneration`` (conformer CTC encoder, Q-Former projector, Granite decoder with the
    release's multipliers) with a random speech LoRA on ``q_proj``/``v_proj`` (the release's targets) attached as the
    PEFT adapter ``"speech"``, and its processor over the torch-only feature extractor (no torchaudio)."""
    from peft import LoraConfig, inject_adapter_in_model
    from transformers import GraniteSpeechConfig, GraniteSpeechForConditionalGeneration, GraniteSpeechProcessor

    from ..adapters.granite_speech_features import granite_feature_extractor_class

    tok.add_special_tokens({"additional_special_tokens": ["<|start_of_role|>", "<|end_of_role|>", "<|end_of_text|>",
                                                          "<|audio|>"]}, replace_extra_special_tokens=False)
    tok.audio_token = "<|audio|>"
    ids = tok.convert_tokens_to_ids
    text = dict(model_type="granite", **_text_dims(n_layers, hidden, d_mlp, vocab, heads, kv_heads),
                embedding_multiplier=12.0, residual_multiplier=0.22, attention_multiplier=0.0625, logits_scaling=8.0,
                pad_token_id=tok.pad_token_id, eos_token_id=ids("<|end_of_text|>"), bos_token_id=ids("<|end_of_text|>"),
                initializer_range=0.1)  # the multipliers shrink every branch: larger weights keep edits visible
    cfg = GraniteSpeechConfig(
        text_config=text,
        encoder_config=dict(input_dim=160, num_layers=2, hidden_dim=enc_hidden, feedforward_mult=2, num_heads=2,
                            output_dim=8, context_size=20, max_pos_emb=32, conv_kernel_size=3),
        projector_config=dict(model_type="blip_2_qformer", hidden_size=enc_hidden, num_hidden_layers=1,
                              num_attention_heads=2, intermediate_size=2 * enc_hidden, encoder_hidden_size=enc_hidden,
                              cross_attention_frequency=1, max_position_embeddings=64, vocab_size=8),
        audio_token_index=ids("<|audio|>"), has_lora_adapter=True, tie_word_embeddings=False, initializer_range=0.1)
    model = GraniteSpeechForConditionalGeneration(cfg)
    lora = LoraConfig(r=4, lora_alpha=8, init_lora_weights=False, target_modules=["q_proj", "v_proj"])
    inject_adapter_in_model(lora, model, adapter_name="speech")
    model.speech_lora_config = lora  # what save_granite_folder writes as adapter_config.json
    proc = GraniteSpeechProcessor(audio_processor=granite_feature_extractor_class()(), tokenizer=tok,
                                  chat_template=GRANITE_TEMPLATE)
    return model, proc


def save_granite_folder(model, processor, path) -> None:
    """Write a Granite Speech checkpoint folder as the release lays it out: base weights, config and processor files,
    and the speech LoRA (PEFT format: ``adapter_config.json``, ``adapter_model.safetensors``) in the same folder."""
    from pathlib import Path

    from safetensors.torch import save_file

    from peft import get_peft_model_state_dict

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.speech_lora_config.save_pretrained(path)
    lora = get_peft_model_state_dict(model, adapter_name="speech")
    save_file({f"base_model.model.{k}": v.contiguous() for k, v in lora.items()},
              str(path / "adapter_model.safetensors"), metadata={"format": "pt"})
    base = {k.replace(".base_layer.", "."): v.contiguous() for k, v in model.state_dict().items() if ".lora_" not in k}
    save_file(base, str(path / "model.safetensors"), metadata={"format": "pt"})
    model.config.architectures = [type(model).__name__]  # what the release's config.json names
    model.config.save_pretrained(path)
    processor.save_pretrained(path)
#: Gemma's chat format: ``<bos><start_of_turn>user\n`` content ``<end_of_turn>\n`` ... ``<start_of_turn>model\n``;
#: an audio part is ``<audio_soft_token>``, which the processor expands to ``\n\n<start_of_audio>`` + its audio tokens
#: + ``<end_of_audio>\n\n``
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<start_of_turn>"
    "{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'audio' %}<audio_soft_token>{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
#: rows of Gemma 3n's vision and audio embedding tables of a tiny model (the last ``2 * GEMMA_MM_ROWS`` token ids)
GEMMA_MM_ROWS = 16


def _gemma_tokenizer(words, vocab):
    """A byte-level tokenizer laid out as Gemma 3n's vocabulary: text ids first (bytes, chat specials, ``words``,
    unused fillers), then ``GEMMA_MM_ROWS`` vision ids from ``<end_of_image>`` and as many audio ids from
    ``<end_of_audio>`` (the model embeds ids >= each offset with its vision / audio embedder)."""
    from transformers import Qwen2Tokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    symbols = sorted(bytes_to_unicode().values(), key=ord)
    chat = ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<start_of_audio>"]
    text = vocab - 2 * GEMMA_MM_ROWS
    if len(symbols) + len(chat) + len(words) > text:
        raise ValueError(f"{len(words)} extra words do not fit Gemma 3n's tiny text vocabulary ({text} ids)")
    fill = [f"<unused{i}>" for i in range(text - len(symbols) - len(chat) - len(words))]
    image = ["<end_of_image>", "<image_soft_token>"] + [f"<image_unused{i}>" for i in range(GEMMA_MM_ROWS - 2)]
    audio = ["<end_of_audio>", "<audio_soft_token>"] + [f"<audio_unused{i}>" for i in range(GEMMA_MM_ROWS - 2)]
    order = symbols + chat + list(words) + fill + image + audio
    tok = Qwen2Tokenizer(
        vocab={s: i for i, s in enumerate(order)}, merges=[], unk_token=None, bos_token="<bos>", eos_token="<eos>",
        pad_token="<pad>", extra_special_tokens={
            "boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>",
            "boa_token": "<start_of_audio>", "eoa_token": "<end_of_audio>", "audio_token": "<audio_soft_token>"})
    tok.add_special_tokens({"additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"] + fill + image + audio},
                           replace_extra_special_tokens=False)
    tok.add_tokens(list(words))
    return tok


def gemma3n(tok, n_layers, hidden, d_mlp, heads, kv_heads, enc_hidden, vocab, audio_tokens: int = 188):
    """``Gemma3nForConditionalGeneration`` (USM conformer audio encoder, AltUp / LAuReL / per-layer-input decoder with
    activation sparsity 0.95 in layer 0) without its vision tower (:mod:`esn_lens.adapters.gemma3n_vision`), and its
    processor (``audio_tokens`` soft tokens per clip: the release's 188 cover 30 s). ``tok``'s added words are kept."""
    from transformers import (Gemma3nAudioFeatureExtractor, Gemma3nConfig, Gemma3nForConditionalGeneration,
                              Gemma3nProcessor, SiglipImageProcessorPil)

    from ..adapters.gemma3n_vision import no_vision_classes

    words = [t.content for t in tok.added_tokens_decoder.values() if not t.special]
    gtok = _gemma_tokenizer(words, vocab)
    ids = gtok.convert_tokens_to_ids
    text, no_vision = vocab - 2 * GEMMA_MM_ROWS, no_vision_classes()[0]
    cfg = Gemma3nConfig(
        text_config=dict(**_text_dims(n_layers, hidden, d_mlp, vocab, heads, kv_heads), head_dim=hidden // heads,
                         vocab_size_per_layer_input=text, hidden_size_per_layer_input=8, altup_num_inputs=2, laurel_rank=4,
                         num_kv_shared_layers=0, activation_sparsity_pattern=[0.95] + [0.0] * (n_layers - 1),
                         layer_types=["sliding_attention"] * (n_layers - 1) + ["full_attention"], sliding_window=64,
                         pad_token_id=ids("<pad>"), eos_token_id=ids("<end_of_turn>"), bos_token_id=ids("<bos>")),
        vision_config=no_vision(hidden_size=16, vocab_size=GEMMA_MM_ROWS, vocab_offset=text),
        audio_config=dict(vocab_size=GEMMA_MM_ROWS, vocab_offset=text + GEMMA_MM_ROWS, hidden_size=enc_hidden,
                          conf_num_hidden_layers=1, conf_num_attention_heads=2, sscp_conv_channel_size=[8, 4]),
        audio_soft_tokens_per_image=audio_tokens, boi_token_id=ids("<start_of_image>"), eoi_token_id=ids("<end_of_image>"),
        image_token_id=ids("<image_soft_token>"), boa_token_id=ids("<start_of_audio>"), eoa_token_id=ids("<end_of_audio>"),
        audio_token_id=ids("<audio_soft_token>"), tie_word_embeddings=True)
    proc = Gemma3nProcessor(feature_extractor=Gemma3nAudioFeatureExtractor(), image_processor=SiglipImageProcessorPil(),
                            tokenizer=gtok, chat_template=GEMMA_TEMPLATE, audio_seq_length=audio_tokens)
    return Gemma3nForConditionalGeneration(cfg), proc
