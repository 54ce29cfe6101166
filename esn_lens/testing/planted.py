"""A tiny real Qwen2 model whose emotion answer is decided by known, planted MLP units.

Weights are set by hand (no training), so every claim of the method can be checked exactly:

* each clip is a transcript holding one *cue word* of its emotion (``grr`` -> angry, ...);
* layer-1 attention averages the cue over the context (uniform attention: zero queries and keys);
* ``units_per_emotion`` planted units of layer 1 per emotion fire (``act > 0``) on every position
  after their emotion's cue, and otherwise only on newline tokens (small positive value), and
  write to that emotion's answer logit;
* every other unit is random "noise" reading only emotion-neutral directions, writing nothing.

So deactivating an emotion's planted units removes exactly that emotion's answer, and amplifying
them raises its share; selectors should find them. Example::

    model, tok, planted = build_planted()
    clips = planted_clips(5)
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..data.clip import EmotionClip
from .tiny import CHAT_TEMPLATE, build_tokenizer

CUES = {"angry": "grr", "happy": "yay", "neutral": "meh", "sad": "sob", "fearful": "eek", "surprised": "wow"}
FILLER = ["I", "said", "it", "again", "today", "then", "we", "left", "home", "so", "that", "was", "all"]


def build_planted(emotions: Sequence[str] = ("angry", "happy", "neutral", "sad"), *, units_per_emotion: int = 4,
                  n_layers: int = 2, d_mlp: int = 64, hidden: int = 32, seed: int = 0):
    """Return ``(model, tokenizer, planted)`` with ``planted[emotion]`` = list of (layer, neuron) units."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    E = len(emotions)
    if E * units_per_emotion > d_mlp or 3 * E + 2 > hidden:
        raise ValueError("d_mlp / hidden too small for the planted units")
    cues = [CUES[e] for e in emotions]
    tok = build_tokenizer(extra_words=list(emotions) + cues)
    tok.chat_template = CHAT_TEMPLATE.replace("AUDIO_PLACEHOLDER", "")
    g = torch.Generator().manual_seed(seed)
    cfg = Qwen2Config(vocab_size=320, hidden_size=hidden, intermediate_size=d_mlp, num_hidden_layers=n_layers,
                      num_attention_heads=1, num_key_value_heads=1, max_position_embeddings=2048,
                      tie_word_embeddings=False, attn_implementation="eager")
    model = Qwen2ForCausalLM(cfg).eval()
    CONST, NL = 0, 1
    CUE, ATT, ANS = 2, 2 + E, 2 + 2 * E
    noise_dims = list(range(ANS + E, hidden))  # directions nothing emotional writes to
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        for name, p in model.named_parameters():
            if name.endswith("layernorm.weight") or name == "model.norm.weight":
                p.fill_(1.0)
        emb = model.model.embed_tokens.weight
        emb[:, CONST] = 1.0
        emb[:, noise_dims] = 0.3 * torch.randn(emb.shape[0], len(noise_dims), generator=g)
        nl_id = tok("\n", add_special_tokens=False).input_ids[0]
        emb[nl_id, NL] = 1.0
        for e, cue in enumerate(cues):
            emb[tok.convert_tokens_to_ids(cue), CUE + e] = 4.0
        planted: dict[str, list[tuple[int, int]]] = {}
        perm = torch.randperm(d_mlp, generator=g)
        last = n_layers - 1
        for li, layer in enumerate(model.model.layers):
            mlp = layer.mlp
            # noise units everywhere: random reads of emotion-neutral directions, no output
            mlp.gate_proj.weight[:, [CONST, NL] + noise_dims] = torch.randn(d_mlp, 2 + len(noise_dims), generator=g)
            mlp.up_proj.weight[:, CONST] = 1.0
            if li != last:
                continue
            attn = layer.self_attn
            for e in range(E):
                attn.v_proj.weight[e, CUE + e] = 1.0
                attn.o_proj.weight[ATT + e, e] = 20.0
            for e, emo in enumerate(emotions):
                units = perm[e * units_per_emotion:(e + 1) * units_per_emotion].tolist()
                planted[emo] = [(li, u) for u in sorted(units)]
                for u in units:
                    mlp.gate_proj.weight[u] = 0.0
                    mlp.gate_proj.weight[u, ATT + e] = 2.0
                    mlp.gate_proj.weight[u, NL] = 2.0
                    mlp.gate_proj.weight[u, CONST] = -1.0
                    mlp.down_proj.weight[ANS + e, u] = 1.0
        for e, emo in enumerate(emotions):
            model.lm_head.weight[tok.convert_tokens_to_ids(emo), ANS + e] = 10.0
    return model, tok, planted


def planted_clips(n_per_emotion: int, emotions: Sequence[str] = ("angry", "happy", "neutral", "sad"), *,
                  seed: int = 0, prefix: str = "p") -> list[EmotionClip]:
    """Text-only clips: filler words with the emotion's cue word at a random place; speakers s0..s3."""
    rng = np.random.default_rng(seed)
    clips = []
    for i in range(n_per_emotion):
        for emo in emotions:
            words = list(rng.choice(FILLER, size=int(rng.integers(3, 8))))
            words.insert(int(rng.integers(0, len(words) + 1)), CUES[emo])
            clips.append(EmotionClip(f"{prefix}{emo}{i}", emo, text=" ".join(words), speaker=f"s{i % 4}",
                                     corpus="planted"))
    return clips
