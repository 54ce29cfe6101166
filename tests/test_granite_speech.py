"""Granite Speech specifics: the torch-only log-mel features against an independent numpy reference, the number of
``<|audio|>`` tokens against the processor's formula, the speech LoRA switched by audio presence (forward and
generation, built and loaded), what the residual and logits sites mean under Granite's multipliers, and the reused
encoder output (the common checks are in tests/test_families.py)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from esn_lens import deactivate
from esn_lens.adapters.granite_speech_features import htk_mel_filter_bank, torch_granite_feature_extractor_class
from esn_lens.lens import Lens
from esn_lens.testing import build_tiny, tiny_audio

SEED = 8
PROMPTS = ["Which emotion is it?", "Name the emotion"]


@pytest.fixture(scope="module")
def tiny():
    model, proc = build_tiny("granite_speech", seed=SEED)
    return model, proc, Lens(model, proc)


def _clips() -> list[np.ndarray]:
    noise = (0.1 * np.random.default_rng(0).standard_normal(12345)).astype(np.float32)
    return [tiny_audio(0.3), tiny_audio(0.8, freq=260), noise]


def _numpy_reference(audios, mel_scale: str = "htk") -> list[np.ndarray]:
    """Granite's features from transformers' numpy audio_utils in float64: the batch zero-padded to its longest clip,
    power spectrogram (periodic Hann 400 centred in a 512 frame, hop 160, reflect-padded centred frames) through an
    unnormalised mel filter bank, log10 floored at 1e-10, clamped 8 decades below the clip's peak, / 4 + 1, an odd
    last frame dropped, frame pairs stacked."""
    from transformers.audio_utils import mel_filter_bank, spectrogram, window_function

    mel = mel_filter_bank(num_frequency_bins=257, num_mel_filters=80, min_frequency=0.0, max_frequency=8000.0,
                          sampling_rate=16000, norm=None, mel_scale=mel_scale)
    window = window_function(400, "hann", periodic=True, frame_length=512, center=True)
    n = max(a.size for a in audios)
    out = []
    for a in audios:
        x = np.zeros(n)
        x[: a.size] = a
        logmel = spectrogram(x, window, frame_length=512, hop_length=160, fft_length=512, power=2.0, center=True,
                             pad_mode="reflect", mel_filters=mel, mel_floor=1e-10, log_mel="log10").T
        logmel = np.maximum(logmel, logmel.max() - 8.0) / 4 + 1
        logmel = logmel[: logmel.shape[0] // 2 * 2]
        out.append(logmel.reshape(-1, 160))
    return out


def test_torch_features_equal_a_numpy_reference():
    """Tolerance 1e-4 (features are log10 power / 4): the torch path runs float32 FFTs, the reference float64. A bin's
    float32 error is ~1e-7 of its frame's peak amplitude, so at the clamp floor (8 decades of power = 4 of amplitude
    below the peak) it is ~1e-3 relative in amplitude, i.e. ~1e-4 in log10 power / 4 at worst; measured 1.7e-5 max,
    ~3e-7 mean. A real difference in the recipe is far larger: Slaney instead of HTK mel filters moves them > 0.01."""
    from transformers.audio_utils import mel_filter_bank

    fe = torch_granite_feature_extractor_class()()
    audios = _clips()
    got = fe(audios)["input_features"].numpy()
    assert np.allclose(htk_mel_filter_bank(257, 80, 16000).numpy(),
                       mel_filter_bank(257, 80, 0.0, 8000.0, 16000, norm=None, mel_scale="htk"), atol=1e-5)
    for row, ref in enumerate(_numpy_reference(audios)):
        assert got[row].shape == ref.shape == ((max(a.size for a in audios) // 160 + 1) // 2, 160)
        err = np.abs(got[row] - ref)
        assert err.max() < 1e-4 and err.mean() < 1e-6, (row, err.max(), err.mean())
    slaney = _numpy_reference(audios, mel_scale="slaney")
    assert max(np.abs(got[r] - slaney[r]).max() for r in range(3)) > 1e-2


def test_audio_token_counts_follow_the_processor_formula(tiny):
    """Each clip gets ceil(encoder frames / 15) * 3 ``<|audio|>`` tokens (encoder frames = (samples // 160 + 1) // 2),
    the extractor's ``audio_embed_sizes``; the model accepts them (it checks that tokens and projector outputs agree)."""
    _, proc, lens = tiny
    lengths = [1600, 4800, 4959, 4960, 7520, 16000, 24321]
    audios = [tiny_audio(n / 16000, seed=i) for i, n in enumerate(lengths)]
    assert [a.size for a in audios] == lengths
    want = [math.ceil(((n // 160 + 1) // 2) / 15) * 3 for n in lengths]
    assert want == [3, 3, 3, 6, 6, 12, 18]  # 15 encoder frames (0.3 s) per 3 tokens
    assert proc.audio_processor(audios)["audio_embed_sizes"] == want
    b = lens.batch(audios, ["Which emotion?"] * len(audios), sampling_rate=16000)
    assert b.masks.audio.sum(1).tolist() == want
    assert b.inputs["input_features"].shape[1] == (max(lengths) // 160 + 1) // 2
    assert torch.isfinite(lens.run(b).logits).all()


def test_speech_lora_is_on_with_audio_and_off_without(tiny):
    """The speech LoRA (q_proj, v_proj of every layer) changes the decoder: the adapter runs it for audio inputs and
    not for text-only ones, in a forward and in greedy generation, whatever ran before."""
    model, _, lens = tiny
    lora = [m for m in model.modules() if hasattr(m, "lora_A") and hasattr(m, "enable_adapters")]
    assert lens.adapter.has_speech_lora and len(lora) == 2 * lens.n_layers

    def root(batch, on, generate=0):
        for m in lora:
            m.enable_adapters(on)
        with torch.no_grad():
            if generate:
                return model.generate(**batch.inputs, max_new_tokens=generate, do_sample=False,
                                      pad_token_id=lens.tokenizer.pad_token_id)
            return model(**batch.inputs).logits[:, -1]

    audio = lens.batch([tiny_audio(0.5), tiny_audio(0.9, freq=300)], PROMPTS, sampling_rate=16000)
    text = lens.batch(None, PROMPTS)
    for batch, on in ((audio, True), (text, False), (audio, True)):
        got = lens.run(batch).logits
        assert torch.allclose(got, root(batch, on), atol=1e-6)
        assert not torch.allclose(got, root(batch, not on), atol=1e-3)
        assert torch.equal(lens.run(batch, max_new_tokens=4).sequences, root(batch, on, generate=4))


def test_sites_under_granite_multipliers(tiny):
    """What the sites mean: ``logits`` = the model's returned logits (not divided by logits_scaling); the residual
    stream adds residual_multiplier x (attn_out + mlp_out); layer 0 reads embedding_multiplier x (``hook_embed`` at
    text positions, the projector's output at audio positions)."""
    model, _, lens = tiny
    text_cfg = model.config.text_config
    m, e = text_cfg.residual_multiplier, text_cfg.embedding_multiplier
    assert (m, e, text_cfg.logits_scaling) == (0.22, 12.0, 8.0)
    b = lens.batch([tiny_audio(0.4), tiny_audio(0.7, freq=300)], PROMPTS, sampling_rate=16000)
    names = ["hook_embed", "logits"] + [f"blocks.{i}.{k}" for i in range(lens.n_layers)
                                        for k in ("hook_resid_pre", "hook_attn_out", "hook_mlp_out", "hook_resid_post")]
    out = lens.run(b, record=names, logits="all")
    c = out.cache
    with torch.no_grad():
        ref = model(**b.inputs)
    assert torch.allclose(c["logits"], ref.logits, atol=1e-6) and torch.allclose(out.logits, ref.logits, atol=1e-6)
    for i in range(lens.n_layers):
        pre, post = c[f"blocks.{i}.hook_resid_pre"], c[f"blocks.{i}.hook_resid_post"]
        assert torch.allclose(post, pre + m * (c[f"blocks.{i}.hook_attn_out"] + c[f"blocks.{i}.hook_mlp_out"]),
                              atol=1e-5)
    audio, text = b.masks.audio, ~b.masks.audio
    resid0 = c["blocks.0.hook_resid_pre"]
    assert torch.allclose(resid0[text], e * c["hook_embed"][text], atol=1e-5)
    projected = ref.audio_hidden_states[b.inputs["input_features_mask"]]
    assert torch.allclose(resid0[audio], e * projected, atol=1e-5)


def test_reused_encoder_output_equals_a_rerun(tiny):
    """Conditions reuse the conformer's output (the inputs keep ``input_features``, so the LoRA stays on): the tiled,
    edited batch's logits equal a full rerun."""
    _, _, lens = tiny
    b = lens.batch([tiny_audio(0.4), tiny_audio(0.7, freq=300)], PROMPTS, sampling_rate=16000)
    kept = lens.run(b, logits="none", keep_audio=True).audio
    assert kept.kind == "tower" and torch.is_tensor(kept.output.last_hidden_state)
    tiled = b.tile(2)
    u = torch.zeros(lens.n_layers, lens.d_mlp, dtype=torch.bool)
    u[1, :20] = True
    for edits in ([], [deactivate(u)]):
        reused = lens.run(tiled, edits=edits, audio_cache=kept).logits
        assert torch.allclose(reused, lens.run(tiled, edits=edits).logits, atol=1e-6)


def test_saved_folder_loads_the_lora_and_the_torch_processor(tiny, tmp_path):
    """The release's layout (weights + PEFT files side by side) loads with transformers' own PEFT path; the adapter
    takes over its LoRA switch (generation works with this peft) and the processor is the torch-only one, saved as
    transformers' class name."""
    import json

    from esn_lens.testing.tiny_families import save_granite_folder

    model, proc, lens = tiny
    save_granite_folder(model, proc, tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "processor_config.json").read_text())
    assert saved["audio_processor"]["feature_extractor_type"] == "GraniteSpeechFeatureExtractor"
    loaded = Lens.from_pretrained(str(tmp_path / "m"))
    assert loaded.adapter.has_speech_lora
    assert type(loaded.processor.audio_processor).__name__ == "TorchGraniteSpeechFeatureExtractor"
    for batch in (lens.batch([tiny_audio(0.5)], PROMPTS[0], sampling_rate=16000), lens.batch(None, PROMPTS[0])):
        assert torch.allclose(loaded.run(batch).logits, lens.run(batch).logits, atol=1e-6)
        assert torch.equal(loaded.run(batch, max_new_tokens=3).sequences, lens.run(batch, max_new_tokens=3).sequences)


def test_without_peft_says_which_extra(tiny, tmp_path, monkeypatch):
    """A folder with the speech LoRA needs peft: without it, loading stops with one line naming the extra (never a
    silent run without the LoRA)."""
    import sys

    from esn_lens.errors import UnsupportedModelError
    from esn_lens.testing.tiny_families import save_granite_folder

    model, proc, _ = tiny
    save_granite_folder(model, proc, tmp_path / "m")
    monkeypatch.setitem(sys.modules, "peft", None)  # import peft now raises ImportError
    monkeypatch.setattr("transformers.modeling_utils.maybe_load_adapters",
                        lambda path, download_kwargs, **kw: (None, path, kw))  # transformers without peft skips it
    with pytest.raises(UnsupportedModelError, match=r'pip install "esn-lens\[granite\]"'):
        Lens.from_pretrained(str(tmp_path / "m"))


def test_statistics_count_the_decoder_with_its_speech_lora(tiny):
    """Constructed check where Granite differs (the LoRA): after a text-only run (LoRA off), statistics of an audio
    batch equal an independent count of ``hook_act > 0`` with every LoRA layer on, and differ from the count with it
    off (the LoRA moves which units fire)."""
    model, _, lens = tiny
    lora = [m for m in model.modules() if hasattr(m, "lora_A") and hasattr(m, "enable_adapters")]
    b = lens.batch([tiny_audio(0.5), tiny_audio(0.9, freq=300)], PROMPTS, sampling_rate=16000)
    lens.run(lens.batch(None, PROMPTS))
    stats = lens.new_stats(["angry", "happy"])
    lens.run(b, stats=stats, emotion_index=torch.tensor([0, 1]), logits="none")
    valid = ~(b.masks.padding | b.masks.special)

    def count(on):
        for m in lora:
            m.enable_adapters(on)
        acts = []
        hooks = [model.get_submodule(lens.adapter.mlp_path(i)).act_fn.register_forward_hook(
            lambda mod, i, o: acts.append(o.detach())) for i in range(lens.n_layers)]
        try:
            with torch.no_grad():
                model(**b.inputs)
        finally:
            for h in hooks:
                h.remove()
        return torch.stack([torch.stack([(a[r][valid[r]] > 0).sum(0) for a in acts]) for r in range(2)])

    on, off = count(True), count(False)
    assert torch.equal(stats.K.long(), on) and not torch.equal(on, off)


def test_adapter_attaches_a_lora_that_transformers_left_out(tiny, tmp_path, monkeypatch):
    """When the weights load without their LoRA (transformers' PEFT step skipped) and peft is there, the adapter
    attaches it from the folder's PEFT files: audio and text logits equal the built model's."""
    from esn_lens.testing.tiny_families import save_granite_folder

    model, proc, lens = tiny
    save_granite_folder(model, proc, tmp_path / "m")
    monkeypatch.setattr("transformers.modeling_utils.maybe_load_adapters",
                        lambda path, download_kwargs, **kw: (None, path, kw))
    loaded = Lens.from_pretrained(str(tmp_path / "m"))
    assert loaded.adapter.has_speech_lora and not loaded.model._hf_peft_config_loaded
    for batch in (lens.batch([tiny_audio(0.5)], PROMPTS[0], sampling_rate=16000), lens.batch(None, PROMPTS[0])):
        assert torch.allclose(loaded.run(batch).logits, lens.run(batch).logits, atol=1e-6)
