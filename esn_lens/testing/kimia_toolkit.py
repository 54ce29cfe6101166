"""A tiny stand-in of Kimi-Audio's toolkit prompt manager (``kimia_infer.api.prompt_manager.KimiAPromptManager``).

Same interface as the toolkit's (``get_prompt(messages, output_type="text")`` -> content with ``to_tensor()`` and
``continuous_feature``; ``text_tokenizer``; ``extra_tokens``), with toy parts in place of the real ones: the
"audio tokens" are energy buckets of 80 ms frames (12.5 per second, like GLM-4-Voice's) plus the token offset, and
the "Whisper features" are log band energies of 10 ms frames stacked eight at a time (one row per audio token).
Messages are ``{"role": "user"|"assistant", "message_type": "text"|"audio", "content": text or wav path}``.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

#: the Kimi-Audio control tokens of the tiny tokenizer (attribute name on ``extra_tokens`` -> token)
KIMIA_TOKENS = {
    "kimia_user_msg_start": "<|im_kimia_user_msg_start|>",
    "kimia_assistant_msg_start": "<|im_kimia_assistant_msg_start|>",
    "msg_end": "<|im_msg_end|>",
    "media_begin": "<|im_media_begin|>",
    "media_end": "<|im_media_end|>",
    "kimia_text_blank": "<|im_kimia_text_blank|>",
    "kimia_text_eos": "<|im_kimia_text_eos|>",
}
RATE = 16000
TOKEN_SAMPLES = 1280  # 80 ms: 12.5 audio tokens per second
N_BANDS = 8
FRAMES_PER_TOKEN = 8


def add_kimia_tokens(tok) -> Any:
    """Add Kimi-Audio's control tokens to a tokenizer as special tokens (in place; returned)."""
    tok.add_tokens(list(KIMIA_TOKENS.values()), special_tokens=True)
    return tok


def audio_tokens_and_features(wav: np.ndarray) -> tuple[list[int], np.ndarray]:
    """Toy discrete tokens (0..63, before the offset) and features ``(n_tokens, N_BANDS * FRAMES_PER_TOKEN)``."""
    n = max(1, -(-wav.size // TOKEN_SAMPLES))
    x = np.zeros(n * TOKEN_SAMPLES, dtype=np.float64)
    x[:wav.size] = wav
    frames = x.reshape(n * FRAMES_PER_TOKEN, TOKEN_SAMPLES // FRAMES_PER_TOKEN)
    spec = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    bands = np.stack([b.sum(1) for b in np.array_split(spec, N_BANDS, axis=1)], 1)
    feats = np.log10(bands + 1e-6).reshape(n, -1).astype(np.float32) / 4.0
    energy = np.log10((x.reshape(n, -1) ** 2).mean(1) + 1e-8)
    tokens = np.clip(((energy + 8.0) * 8).astype(int), 0, 63).tolist()
    return tokens, feats


@dataclass
class TinyKimiAContent:
    """The two streams of a prompt, the continuous mask and the features (like the toolkit's ``KimiAContent``)."""

    audio_token_ids: list[int] = field(default_factory=list)
    text_token_ids: list[int] = field(default_factory=list)
    is_continuous_mask: list[bool] = field(default_factory=list)
    continuous_feature: list[torch.Tensor] = field(default_factory=list)

    def to_tensor(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(audio stream, text stream, continuous mask)``, each (1, seq)."""
        return (torch.tensor([self.audio_token_ids], dtype=torch.long), torch.tensor([self.text_token_ids], dtype=torch.long),
                torch.tensor([self.is_continuous_mask], dtype=torch.bool))

    def add(self, audio_id: int, text_id: int, continuous: bool = False) -> None:
        self.audio_token_ids.append(int(audio_id))
        self.text_token_ids.append(int(text_id))
        self.is_continuous_mask.append(continuous)


class TinyKimiAPromptManager:
    """``KimiAPromptManager(model_path, kimia_token_offset)`` with toy audio parts (see the module docstring).

    ``model_path``: a saved tiny Kimi-Audio folder (its tokenizer and config are read), or None with ``tokenizer``.
    """

    def __init__(self, model_path: str | None = None, kimia_token_offset: int | None = None, tokenizer: Any = None,
                 **_: Any):
        if tokenizer is None:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=True)  # as the toolkit loads it
        if kimia_token_offset is None:
            with open(os.path.join(model_path, "config.json")) as f:
                kimia_token_offset = json.load(f)["kimia_token_offset"]
        self.text_tokenizer = tokenizer
        self.kimia_token_offset = int(kimia_token_offset)
        self.extra_tokens = SimpleNamespace(**{k: tokenizer.convert_tokens_to_ids(v) for k, v in KIMIA_TOKENS.items()})

    def _audio(self, path: str) -> tuple[list[int], torch.Tensor]:
        import soundfile as sf

        wav, rate = sf.read(path, dtype="float32", always_2d=True)
        if rate != RATE:
            raise ValueError(f"{path}: {rate} Hz, the tiny prompt manager reads {RATE} Hz")
        tokens, feats = audio_tokens_and_features(wav.mean(1))
        return [t + self.kimia_token_offset for t in tokens], torch.from_numpy(feats).unsqueeze(0)

    def get_prompt(self, messages: list[dict], output_type: str = "text") -> TinyKimiAContent:
        """The prompt of a chat: per message a role-start control token, then the audio or the text; then the
        assistant start (the model continues the text stream from there)."""
        x, blank = self.extra_tokens, self.extra_tokens.kimia_text_blank
        out = TinyKimiAContent()
        for msg in messages:
            role = msg["role"]
            out.add(x.kimia_user_msg_start if role == "user" else x.kimia_assistant_msg_start, blank)
            if msg["message_type"] == "audio":
                tokens, feats = self._audio(msg["content"])
                out.add(x.media_begin, blank)
                for t in tokens:
                    out.add(t, blank, continuous=True)
                out.add(x.media_end, blank)
                out.continuous_feature.append(feats)
            else:
                for t in self.text_tokenizer(msg["content"], add_special_tokens=False).input_ids:
                    out.add(blank, t)
            out.add(x.msg_end, blank)
        out.add(x.kimia_assistant_msg_start, blank)
        return out


def write_stand_in_toolkit(folder: str) -> str:
    """Write a ``kimia_infer`` package under ``folder`` whose ``api.prompt_manager.KimiAPromptManager`` is
    :class:`TinyKimiAPromptManager`; put ``folder`` on ``sys.path`` to let esn_lens find "the toolkit"."""
    pkg = os.path.join(folder, "kimia_infer", "api")
    os.makedirs(pkg, exist_ok=True)
    for init in (os.path.join(folder, "kimia_infer", "__init__.py"), os.path.join(pkg, "__init__.py")):
        open(init, "w").close()
    with open(os.path.join(pkg, "prompt_manager.py"), "w") as f:
        f.write("from esn_lens.testing.kimia_toolkit import TinyKimiAPromptManager as KimiAPromptManager  # noqa: F401\n")
    return folder


def build_tiny_kimia(tok, n_layers, hidden, d_mlp, heads, kv_heads, enc_hidden, vocab):
    """``(MoonshotKimiaForCausalLM, KimiaPrompter)``: the tiny Kimi-Audio stand-in (eager attention, one mimo layer
    branching at 3/4 depth, 64 toy audio tokens after the text vocabulary, 64-d features) and its prompt manager.
    ``save_pretrained`` writes the modeling files beside the weights (load with ``trust_remote_code=True``)."""
    from ..adapters.kimi_audio import KimiaPrompter
    from .kimia_remote.configuration_moonshot_kimia import KimiAudioConfig
    from .kimia_remote.modeling_moonshot_kimia import MoonshotKimiaForCausalLM

    add_kimia_tokens(tok)
    KimiAudioConfig.register_for_auto_class()
    MoonshotKimiaForCausalLM.register_for_auto_class("AutoModelForCausalLM")
    cfg = KimiAudioConfig(vocab_size=vocab + 64, hidden_size=hidden, intermediate_size=d_mlp, num_hidden_layers=n_layers,
                          num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=4096,
                          tie_word_embeddings=False, kimia_mimo_layers=1,
                          kimia_mimo_transformer_from_layer_index=max(0, 3 * n_layers // 4 - 1),
                          kimia_adaptor_input_dim=N_BANDS * FRAMES_PER_TOKEN, kimia_token_offset=vocab,
                          kimia_media_begin=tok.convert_tokens_to_ids(KIMIA_TOKENS["media_begin"]),
                          kimia_media_end=tok.convert_tokens_to_ids(KIMIA_TOKENS["media_end"]),
                          architectures=["MoonshotKimiaForCausalLM"], attn_implementation="eager")
    model = MoonshotKimiaForCausalLM(cfg)
    return model, KimiaPrompter(TinyKimiAPromptManager(tokenizer=tok, kimia_token_offset=vocab))
