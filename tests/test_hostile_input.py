"""Hostile and odd input: every case gets a defined result or a clear esn_lens error naming the input.

Never a deep torch traceback, never a NaN in statistics, logits or metrics. One named test per case
(``pytest -v tests/test_hostile_input.py`` lists them); the defined behaviours are summarised in
docs/scaling.md ("Hostile and odd input").
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import _tiny
from esn_lens.data.clip import MAX_FLOAT_PEAK, EmotionClip, prepare_audio
from esn_lens.errors import CorruptFileError, ESNLensError, IncompatibleError, InputError, MissingFileError
from esn_lens.evaluate import SEREvaluator, accuracy_change_heatmap, deactivation_conditions, specificity
from esn_lens.interventions import Condition, FunctionEdit, add, deactivate, steer
from esn_lens.lens import Lens
from esn_lens.neurons import NeuronSet
from esn_lens.selectors import find_neurons
from esn_lens.stats import NeuronStats
from esn_lens.testing import build_tiny, tiny_audio

SR = 16000
EMOTIONS = ("angry", "happy", "sad")
PROMPT = "Which emotion?"


@pytest.fixture(scope="module")
def lens():
    return Lens(*_tiny("qwen2_audio"))


def stats_of(lens, audios, sampling_rate=SR, **kw):
    """One-emotion stats of a batch of raw audios; returns (stats, batch, logits)."""
    b = lens.batch(list(audios), PROMPT, sampling_rate=sampling_rate, **kw)
    s = lens.new_stats(("x",))
    out = lens.run(b, stats=s, emotion_index=torch.zeros(b.size, dtype=torch.long))
    return s, b, out.logits


def assert_finite(s: NeuronStats, logits=None):
    for n in ("K", "T", "sum", "sumsq", "n_clips"):
        assert torch.isfinite(getattr(s, n)).all(), n
    assert s.T.sum() > 0
    if logits is not None:
        assert torch.isfinite(logits).all()


def clips_for(n_per=2, seconds=0.4):
    return [EmotionClip(f"{e}{i}", e, audio=tiny_audio(seconds, freq=150 + 60 * k + 7 * i, seed=10 * k + i),
                        sampling_rate=SR) for k, e in enumerate(EMOTIONS) for i in range(n_per)]


# ====================================================================== audio content
GOOD = tiny_audio(0.5)

ACCEPTED = {
    "silent": np.zeros(SR, np.float32),
    "clipped_at_full_scale": np.clip(tiny_audio(1.0) * 20, -1, 1),
    "hot_float_peak_4": tiny_audio(0.5) * (4.0 / 0.33),
    "dc_offset": tiny_audio(0.5) * 0.5 + 0.5,
    "float64": tiny_audio(0.5).astype(np.float64),
    "int16": (tiny_audio(0.5) * 32767).astype(np.int16),
    "int32": (tiny_audio(0.5) * 2**31).astype(np.int32),
    "column_vector_time_x_1": tiny_audio(0.5)[:, None],
    "torch_bfloat16_tensor": torch.from_numpy(tiny_audio(0.5)).to(torch.bfloat16),
    "clip_0.1s": tiny_audio(0.1),
}


@pytest.mark.parametrize("case", list(ACCEPTED), ids=list(ACCEPTED))
def test_accepted_audio_gives_finite_stats_and_logits(lens, case):
    s, b, logits = stats_of(lens, [ACCEPTED[case]])
    assert_finite(s, logits)
    assert int(b.masks.audio.sum()) >= 1


def test_int16_equals_float_scaled(lens):
    a16 = (tiny_audio(0.5) * 20000).astype(np.int16)
    s_int, _, _ = stats_of(lens, [a16])
    s_flt, _, _ = stats_of(lens, [a16.astype(np.float32) / 32768.0])
    assert torch.equal(s_int.K, s_flt.K) and torch.allclose(s_int.sum, s_flt.sum, atol=1e-9, rtol=0)


def test_float64_equals_float32(lens):
    s64, _, _ = stats_of(lens, [GOOD.astype(np.float64)])
    s32, _, _ = stats_of(lens, [GOOD])
    assert torch.equal(s64.K, s32.K) and torch.equal(s64.sum, s32.sum)


REFUSED = {
    "nan_samples": (np.where(np.arange(8000) == 100, np.nan, GOOD).astype(np.float32), "NaN or inf"),
    "inf_samples": (np.where(np.arange(8000) == 7, np.inf, GOOD).astype(np.float32), "NaN or inf"),
    "float64_beyond_float32_range": (GOOD.astype(np.float64) * 1e300, "peaks at"),
    "int16_values_stored_as_float": ((GOOD * 32767).round().astype(np.float32), "peaks at"),
    "huge_float_1e30": (GOOD * np.float32(1e30), "peaks at"),
    "stereo_time_x_2": (np.stack([GOOD, GOOD], 1), "downmix"),
    "stereo_2_x_time": (np.stack([GOOD, GOOD], 0), "downmix"),
    "empty_array": (np.zeros(0, np.float32), "empty"),
    "string_array": (np.array(["a", "b"]), "numeric"),
    "complex_array": (GOOD.astype(np.complex64), "numeric"),
    "too_short_10ms": (tiny_audio(0.01), "too short"),
    "single_sample": (np.array([0.5], np.float32), "too short"),
}


@pytest.mark.parametrize("case", list(REFUSED), ids=list(REFUSED))
def test_refused_audio_raises_input_error_naming_the_clip(lens, case):
    audio, msg = REFUSED[case]
    with pytest.raises(InputError, match=msg) as ei:
        lens.batch([GOOD, audio], PROMPT, sampling_rate=SR, clip_ids=["fine", f"bad-{case}"])
    assert f"bad-{case}" in str(ei.value) and "fine" not in str(ei.value)


def test_refused_audio_in_an_emotion_clip_names_its_id(lens):
    clips = clips_for(1)
    clips.append(EmotionClip("broken-nan", "sad", audio=np.full(4000, np.nan, np.float32), sampling_rate=SR))
    with pytest.raises(InputError, match="clip broken-nan: audio contains NaN"):
        lens.collect_stats(clips, PROMPT, EMOTIONS, progress=False)


def test_stereo_wav_file_is_downmixed(lens, tmp_path):
    import soundfile as sf

    p = tmp_path / "stereo.wav"
    sf.write(p, np.stack([GOOD, GOOD * 0.5], 1), SR, subtype="PCM_16")
    audio, rate = EmotionClip("st", "angry", path=p).load(SR)
    assert audio.ndim == 1 and rate == SR
    assert np.allclose(audio, GOOD * 0.75, atol=2e-4)
    s, _, logits = stats_of(lens, [audio])
    assert_finite(s, logits)


def test_unreadable_audio_file_names_the_clip(tmp_path):
    p = tmp_path / "broken.wav"
    p.write_bytes(b"RIFF\x00\x00garbage")
    with pytest.raises(InputError, match="clip b1: cannot read audio file"):
        EmotionClip("b1", "angry", path=p).load(SR)


# ---------------------------------------------------------------------- duration
def test_long_clip_10min_qwen2_audio_sees_first_30s(lens):
    """Qwen2-Audio's Whisper feature extractor keeps the first 30 s (3000 frames, 750 audio tokens)."""
    long = tiny_audio(600.0, seed=3)
    s_long, b_long, lg_long = stats_of(lens, [long])
    s_30, b_30, lg_30 = stats_of(lens, [long[:30 * SR]])
    assert int(b_long.masks.audio.sum()) == 750
    assert torch.equal(b_long.inputs["input_ids"], b_30.inputs["input_ids"])
    assert torch.equal(s_long.K, s_30.K) and torch.equal(s_long.sum, s_30.sum) and torch.equal(lg_long, lg_30)


def test_long_clip_60s_audio_flamingo3_is_windowed():
    """Audio Flamingo 3's processor splits audio into 30 s windows (all of it is heard: 25 tokens/s)."""
    af3 = Lens(*_tiny("audio_flamingo3"))
    s, b, logits = stats_of(af3, [tiny_audio(60.0)])
    assert int(b.masks.audio.sum()) == 1500 and b.inputs["input_features"].shape[0] == 2
    assert_finite(s, logits)


@settings(max_examples=12, deadline=None, derandomize=True)
@given(seconds=st.floats(0.0, 1.5, allow_nan=False), amp=st.floats(0.0, MAX_FLOAT_PEAK))
def test_any_duration_and_level_is_tokens_or_too_short(seconds, amp):
    lens = Lens(*_tiny("qwen2_audio"))
    audio = (tiny_audio(max(seconds, 1 / SR)) * amp).astype(np.float32)
    try:
        s, b, logits = stats_of(lens, [audio])
    except InputError as e:
        assert "too short" in str(e) and seconds < 0.05
        return
    assert int(b.masks.audio.sum()) >= 1
    assert_finite(s, logits)


# ---------------------------------------------------------------------- sampling rates
@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000], ids=lambda r: f"{r}Hz")
def test_wrong_sampling_rate_is_resampled_by_default(lens, rate):
    t = np.arange(int(0.8 * rate)) / rate
    audio = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    s, b, logits = stats_of(lens, [audio], sampling_rate=rate)
    _, ref, _ = stats_of(lens, [np.zeros(int(0.8 * SR), np.float32)])
    assert int(b.masks.audio.sum()) == int(ref.masks.audio.sum())  # same duration -> same audio tokens
    assert_finite(s, logits)


def test_wrong_sampling_rate_refused_without_resample(lens):
    with pytest.raises(InputError, match=r"clip c7: sampling rate 44100 Hz, expected 16000 Hz"):
        lens.batch([GOOD], PROMPT, sampling_rate=44100, resample=False, clip_ids=["c7"])


@pytest.mark.parametrize("rate", [0, -16000, 16000.0, "16k"], ids=["zero", "negative", "float", "string"])
def test_invalid_sampling_rate_value(rate):
    with pytest.raises((InputError, TypeError)) as ei:  # TypeError only from the test-time type checker
        prepare_audio(GOOD, rate, SR, name="clip r1")
    if isinstance(ei.value, InputError):
        assert "clip r1: sampling rate must be a positive integer" in str(ei.value)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(data=st.data())
def test_prepare_audio_property_mono_float32_or_input_error(data):
    dtype = data.draw(st.sampled_from([np.float16, np.float32, np.float64, np.int16, np.int32, np.uint8, np.int8]))
    shape = data.draw(st.sampled_from([(0,), (1,), (37,), (400,), (400, 1), (1, 400), (400, 2), (2, 400), (3, 5, 7)]))
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        elems = st.integers(int(info.min), int(info.max))
    else:
        elems = st.floats(width=np.finfo(dtype).bits, allow_nan=True, allow_infinity=True)
    from hypothesis.extra.numpy import arrays

    a = data.draw(arrays(dtype, shape, elements=elems))
    rate = data.draw(st.sampled_from([8000, 16000, 44100]))
    try:
        out = prepare_audio(a, rate, SR, name="clip h")
    except InputError as e:
        assert str(e).startswith("clip h: ")
        return
    assert out.dtype == np.float32 and out.ndim == 1 and out.size >= 1
    assert np.isfinite(out).all()
    peak = MAX_FLOAT_PEAK if a.dtype.kind == "f" else 1.0
    assert np.abs(out).max() <= peak * (2.0 if rate != SR else 1.0) + 1e-6  # resampling may ring (not clamped)


# ====================================================================== labels and classes
def test_label_outside_label_set_in_collect_stats(lens):
    clips = clips_for(1) + [EmotionClip("odd1", "bored", audio=GOOD, sampling_rate=SR)]
    with pytest.raises(InputError, match=r"unknown emotion label\(s\) \['bored'\]"):
        lens.collect_stats(clips, PROMPT, EMOTIONS, progress=False)


def test_label_outside_label_set_in_evaluation(lens):
    clips = clips_for(1) + [EmotionClip("odd1", "bored", audio=GOOD, sampling_rate=SR)]
    with pytest.raises(InputError, match=r"emotion label\(s\) \['bored'\] outside the evaluated set"):
        SEREvaluator(lens, EMOTIONS).run(clips)


def test_empty_class_in_stats_clear_error_when_scoring(lens):
    clips = [c for c in clips_for(1) if c.emotion != "sad"]
    s = lens.collect_stats(clips, PROMPT, EMOTIONS, progress=False)
    assert s.T[2] == 0
    for selector in ("mad", "lap", "lape", "conact"):
        with pytest.raises(InputError, match=r"no counted tokens for emotion\(s\) \['sad'\]"):
            find_neurons(s, selector, top_frac=0.1)


def test_empty_class_in_evaluation_no_nan_heatmap(lens):
    clips = [c for c in clips_for(1) if c.emotion != "sad"]
    ns = NeuronSet.from_indices(EMOTIONS, {e: [(0, i)] for i, e in enumerate(EMOTIONS)}, lens.n_layers, lens.d_mlp)
    res = SEREvaluator(lens, EMOTIONS).run(clips, [Condition.baseline(), *deactivation_conditions(ns)])
    with pytest.raises(InputError, match=r"no evaluation clips of emotion\(s\) \['sad'\]"):
        accuracy_change_heatmap(res, EMOTIONS)


# ====================================================================== budgets and indices
@pytest.fixture(scope="module")
def small_stats(lens):
    return lens.collect_stats(clips_for(2), PROMPT, EMOTIONS, progress=False)


def heatmap_metrics(lens, ns, clips):
    res = SEREvaluator(lens, EMOTIONS).run(clips, [Condition.baseline(), *deactivation_conditions(ns)])
    H = accuracy_change_heatmap(res, EMOTIONS)
    return H, specificity(H)


def test_budget_r_0_selects_nothing_and_changes_nothing(lens, small_stats):
    ns = find_neurons(small_stats, "mad", top_frac=0.0)
    assert all(c == 0 for c in ns.counts.values())
    H, m = heatmap_metrics(lens, ns, clips_for(1))
    assert np.array_equal(H, np.zeros((3, 3))) and m["ess_mean"] == 0.0


def test_budget_r_1_selects_every_unit_and_metrics_stay_finite(lens, small_stats):
    ns = find_neurons(small_stats, "mad", top_frac=1.0)
    assert all(c == lens.n_layers * lens.d_mlp for c in ns.counts.values())
    H, m = heatmap_metrics(lens, ns, clips_for(1))
    assert np.isfinite(H).all() and all(math.isfinite(m[k]) for k in ("se_mean", "ace_mean", "ess_mean"))


def test_budget_count_1_selects_one_unit(small_stats):
    ns = find_neurons(small_stats, "conact", count=1)
    assert all(c <= 1 for c in ns.counts.values()) and sum(ns.counts.values()) >= 1


@pytest.mark.parametrize("r", [-0.1, 1.5, float("nan"), "0.5"], ids=["negative", "above_1", "nan", "string"])
def test_budget_out_of_range(small_stats, r):
    with pytest.raises((InputError, TypeError)):  # TypeError only from the test-time type checker
        find_neurons(small_stats, "mad", top_frac=r)


@pytest.mark.parametrize("pair", [(2, 0), (0, 64), (-1, 0), (0, -1)], ids=["layer_too_big", "neuron_too_big",
                                                                            "negative_layer", "negative_neuron"])
def test_neuron_index_out_of_range(lens, pair):
    with pytest.raises(InputError, match=rf"index \(layer={pair[0]}, neuron={pair[1]}\) for emotion 'angry' is out of range"):
        NeuronSet.from_indices(EMOTIONS, {"angry": [pair]}, lens.n_layers, lens.d_mlp)


def test_units_mask_of_another_model_shape(lens):
    b = lens.batch([GOOD], PROMPT, sampling_rate=SR)
    with pytest.raises(InputError, match=r"units mask has shape \(3, 64\), the model has \(layers, d_mlp\) = \(2, 64\)"):
        lens.run(b, edits=[deactivate(torch.ones(3, 64, dtype=torch.bool))])


def test_record_layer_out_of_range(lens):
    b = lens.batch([GOOD], PROMPT, sampling_rate=SR)
    with pytest.raises(InputError, match=r"blocks.5.mlp.hook_act: layer 5 out of range, the model has 2 decoder layers \(0..1\)"):
        lens.run(b, record=["blocks.5.mlp.hook_act"])


def test_emotion_index_out_of_range(lens):
    b = lens.batch([GOOD], PROMPT, sampling_rate=SR)
    s = lens.new_stats(("x",))
    with pytest.raises(InputError, match="emotion index out of range"):
        lens.run(b, stats=s, emotion_index=torch.tensor([3]))


# ====================================================================== low precision
@pytest.fixture(scope="module")
def fp16_lens():
    model, proc = build_tiny("qwen2_audio", seed=0)
    return Lens(model.half(), proc)


@pytest.mark.parametrize("alpha", [1e2, 1e4, 1e6, 1e30], ids=["alpha_1e2", "alpha_1e4", "alpha_1e6", "alpha_1e30"])
def test_fp16_steering_large_alpha_stays_finite(fp16_lens, alpha):
    lens = fp16_lens
    every = torch.ones(lens.n_layers, lens.d_mlp, dtype=torch.bool)
    b = lens.batch([GOOD, tiny_audio(0.3, seed=1)], PROMPT, sampling_rate=SR)
    out = lens.run(b, edits=[steer(every, alpha=alpha)], record=["blocks.1.mlp.hook_act"])
    assert torch.isfinite(out.logits).all()
    assert torch.isfinite(out.cache["blocks.1.mlp.hook_act"]).all()
    ns = NeuronSet(every[None].expand(3, -1, -1).clone(), EMOTIONS)
    clips = clips_for(1)
    res = SEREvaluator(lens, EMOTIONS).run(clips, [Condition.baseline(), *deactivation_conditions(ns, kind="steer", alpha=alpha)])
    assert all(p is not None for r in res.values() for p in r.predictions)
    m = specificity(accuracy_change_heatmap(res, EMOTIONS))
    assert all(math.isfinite(m[k]) for k in ("se_mean", "ace_mean", "ess_mean"))


def test_fp16_steering_during_generation_stays_finite(fp16_lens):
    lens = fp16_lens
    every = torch.ones(lens.n_layers, lens.d_mlp, dtype=torch.bool)
    b = lens.batch([GOOD], PROMPT, sampling_rate=SR)
    out = lens.run(b, edits=[steer(every, alpha=1e6)], max_new_tokens=3)
    assert out.sequences.shape[1] == b.inputs["input_ids"].shape[1] + 3


@pytest.mark.parametrize("alpha", [float("inf"), float("-inf"), float("nan")], ids=["inf", "minus_inf", "nan"])
def test_non_finite_alpha_refused(alpha):
    with pytest.raises(InputError, match="alpha must be finite"):
        steer(torch.ones(2, 64, dtype=torch.bool), alpha=alpha)
    with pytest.raises(InputError, match="delta must be finite"):
        add(torch.ones(2, 64, dtype=torch.bool), delta=alpha)


def test_nan_logits_are_counted_as_unparsed_not_nan_metrics(lens):
    """A user edit that writes NaN makes NaN logits; each such answer counts as wrong (no NaN accuracy)."""
    every = torch.ones(lens.n_layers, lens.d_mlp, dtype=torch.bool)
    poison = FunctionEdit(every, fn=lambda v, layer, m: torch.full_like(v, float("nan")))
    clips = clips_for(1)
    res = SEREvaluator(lens, EMOTIONS).run(clips, [Condition("baseline", []), Condition("poison", [poison])])
    assert res["poison"].predictions == [None] * len(clips) and res["poison"].n_unparsed == len(clips)
    assert res["poison"].accuracy == 0.0 and all(v == 0.0 for v in res["poison"].per_class().values())


# ====================================================================== empty inputs
def test_empty_clip_list_batch(lens):
    with pytest.raises(InputError, match="no clips"):
        lens.batch([], PROMPT, sampling_rate=SR)


def test_empty_clip_list_collect_stats(lens):
    with pytest.raises(InputError, match="collect_stats: no clips given"):
        lens.collect_stats([], PROMPT, EMOTIONS, progress=False)


def test_empty_clip_list_evaluation(lens):
    with pytest.raises(InputError, match="no clips given"):
        SEREvaluator(lens, EMOTIONS).run([])


# ====================================================================== stats files
@pytest.fixture(scope="module")
def saved_stats(lens, small_stats, tmp_path_factory):
    p = tmp_path_factory.mktemp("stats") / "stats.safetensors"
    small_stats.save(p)
    return p


def test_stats_file_from_another_model_refused_on_load(lens, saved_stats):
    other = Lens(*_tiny("qwen2_audio", seed=1))  # same architecture, other weights
    assert other.fingerprint != lens.fingerprint
    with pytest.raises(IncompatibleError, match=rf"{saved_stats.name}: stats were recorded from model"):
        NeuronStats.load(saved_stats, expect_fingerprint=other.fingerprint)


def test_stats_of_another_model_refused_when_accumulating(lens, saved_stats):
    other = Lens(*_tiny("qwen2_audio", seed=1))
    s = NeuronStats.load(saved_stats)
    with pytest.raises(IncompatibleError, match="stats were recorded from model"):
        other.collect_stats(clips_for(1), PROMPT, EMOTIONS, stats=s, progress=False)
    with pytest.raises(IncompatibleError, match="model_fingerprint differs"):
        s.merge(other.new_stats(EMOTIONS))


def test_stats_of_another_shape_refused(saved_stats):
    small = Lens(*build_tiny("qwen2_audio", seed=0, d_mlp=48))
    s = NeuronStats.load(saved_stats)
    with pytest.raises(InputError, match="stats are for 2x64 units, the model has 2x48"):
        small.collect_stats(clips_for(1), PROMPT, EMOTIONS, stats=s, progress=False)


def test_stats_file_of_another_site_refused(lens, saved_stats):
    with pytest.raises(IncompatibleError, match="recorded at site 'act', not 'post'"):
        NeuronStats.load(saved_stats, expect_site="post")
    with pytest.raises(IncompatibleError, match="site differs"):
        NeuronStats.load(saved_stats).merge(lens.new_stats(EMOTIONS, site="post"))


def _write_damaged(kind, good_path, path):
    from safetensors.torch import save_file

    from esn_lens.io import save_tensors

    raw = good_path.read_bytes()
    s = NeuronStats.load(good_path)
    sd = s.state_dict()
    meta = sd.pop("meta")
    if kind == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif kind == "random_bytes":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 600, dtype=np.uint8).tobytes())
    elif kind == "zero_bytes":
        path.write_bytes(b"")
    elif kind == "foreign_safetensors":
        save_file({"weight": torch.zeros(3)}, str(path))
    elif kind == "neuron_set_file":
        NeuronSet.from_indices(EMOTIONS, {}, 2, 64).save(path)
    elif kind == "missing_meta_key":
        save_tensors(path, sd, "neuron_stats", {k: v for k, v in meta.items() if k != "emotions"})
    elif kind == "missing_tensor":
        save_tensors(path, {k: v for k, v in sd.items() if k != "K"}, "neuron_stats", meta)
    elif kind == "wrong_tensor_shape":
        save_tensors(path, {**sd, "K": torch.zeros(3, 2, 63, dtype=torch.float64)}, "neuron_stats", meta)
    elif kind == "nan_counts":
        save_tensors(path, {**sd, "T": torch.full((3,), float("nan"), dtype=torch.float64)}, "neuron_stats", meta)
    elif kind == "negative_counts":
        save_tensors(path, {**sd, "K": -sd["K"] - 1}, "neuron_stats", meta)
    elif kind == "unknown_site":
        save_tensors(path, sd, "neuron_stats", {**meta, "site": "resid"})
    elif kind == "bad_meta_type":
        save_tensors(path, sd, "neuron_stats", {**meta, "n_layers": "two"})
    elif kind == "no_emotions":
        save_tensors(path, {**sd, "T": torch.zeros(0, dtype=torch.float64)}, "neuron_stats", {**meta, "emotions": []})
    else:
        raise AssertionError(kind)


DAMAGED = ["truncated", "random_bytes", "zero_bytes", "foreign_safetensors", "neuron_set_file", "missing_meta_key",
           "missing_tensor", "wrong_tensor_shape", "nan_counts", "negative_counts", "unknown_site", "bad_meta_type",
           "no_emotions"]


@pytest.mark.parametrize("kind", DAMAGED, ids=DAMAGED)
def test_corrupt_stats_file(saved_stats, tmp_path, kind):
    bad = tmp_path / f"{kind}.safetensors"
    _write_damaged(kind, saved_stats, bad)
    with pytest.raises(CorruptFileError, match=rf"{bad.name}"):
        NeuronStats.load(bad)


def test_missing_stats_file(tmp_path):
    p = tmp_path / "nope.safetensors"
    with pytest.raises(MissingFileError, match="nope.safetensors: no such file") as ei:
        NeuronStats.load(p)
    assert isinstance(ei.value, FileNotFoundError) and isinstance(ei.value, ESNLensError)


def test_directory_instead_of_stats_file(tmp_path):
    with pytest.raises(CorruptFileError, match=tmp_path.name):
        NeuronStats.load(tmp_path)
