"""Foundation: adapters, the Lens trace and streaming NeuronStats against plain-torch references."""
import numpy as np
import pytest
import torch

from conftest import AUDIO_FAMILIES, TEXT_FAMILIES
from esn_lens.adapters import SITES, adapter_for, hook_name, parse_hook_name
from esn_lens.errors import IncompatibleError, InputError, UnsupportedModelError
from esn_lens.lens import Lens
from esn_lens.stats import NeuronStats
from esn_lens.testing import tiny_audio

EMOTIONS = ("angry", "happy")
PROMPTS = ["Which emotion is it?", "Name the emotion", "Emotion?"]


def make_batch(lens, family, padding_side="left", n=3):
    audios = None if family in TEXT_FAMILIES else [tiny_audio(0.3 + 0.25 * i, freq=180 + 70 * i, seed=i) for i in range(n)]
    return lens.batch(audios, PROMPTS[:n], sampling_rate=16000, padding_side=padding_side)


def hook_reference(lens, batch, site):
    """Site values of every layer from plain torch forward hooks (no nnsight)."""
    captured, handles = {}, []
    for layer in range(lens.n_layers):
        mod = lens.adapter.site_module(layer, site)
        if SITES[site][1] == "output":
            handles.append(mod.register_forward_hook(lambda m, i, o, layer=layer: captured.__setitem__(layer, o.detach().clone())))
        else:
            handles.append(mod.register_forward_pre_hook(lambda m, a, layer=layer: captured.__setitem__(layer, a[0].detach().clone())))
    try:
        with torch.no_grad():
            lens.adapter.root()(**batch.inputs)
    finally:
        for h in handles:
            h.remove()
    return captured


def loop_stats(captured, valid, emotion_idx, E):
    """Independent per-token loop: K, T, sum, sumsq."""
    L = len(captured)
    N = captured[0].shape[-1]
    K = np.zeros((E, L, N)); T = np.zeros(E); S = np.zeros((E, L, N)); SS = np.zeros((E, L, N))
    for b in range(valid.shape[0]):
        for p in range(valid.shape[1]):
            if not valid[b, p]:
                continue
            e = emotion_idx[b]
            T[e] += 1
            for layer in range(L):
                v = captured[layer][b, p].double().numpy()
                K[e, layer] += v > 0
                S[e, layer] += v
                SS[e, layer] += v * v
    return K, T, S, SS


def independent_valid(lens, batch):
    tok = lens.tokenizer
    ids = batch.inputs["input_ids"]
    special = set(tok.all_special_ids)
    if lens.adapter.audio_token:
        special.discard(tok.convert_tokens_to_ids(lens.adapter.audio_token))
    keep = np.array([[int(t) not in special for t in row] for row in ids])
    return keep & (batch.inputs["attention_mask"].numpy() == 1)


@pytest.mark.parametrize("family", AUDIO_FAMILIES + TEXT_FAMILIES)
@pytest.mark.parametrize("site", list(SITES))
def test_stats_equal_hook_reference(tiny, family, site):
    model, proc = tiny(family)
    lens = Lens(model, proc)
    batch = make_batch(lens, family)
    stats = lens.new_stats(EMOTIONS, site=site)
    idx = torch.tensor([0, 1, 0])
    lens.run(batch, stats=stats, emotion_index=idx, logits="none")
    valid = independent_valid(lens, batch)
    assert valid.sum() > 10
    K, T, S, SS = loop_stats(hook_reference(lens, batch, site), valid, idx.tolist(), 2)
    assert np.array_equal(stats.T.numpy().reshape(-1), T) and stats.T.shape == (2, 1, 1)  # dense: one T per emotion, broadcast
    assert np.array_equal(stats.K.numpy(), K)
    np.testing.assert_allclose(stats.sum.numpy(), S, rtol=1e-6, atol=1e-6)  # float32 row partials
    np.testing.assert_allclose(stats.sumsq.numpy(), SS, rtol=1e-6, atol=1e-6)
    assert 0 < stats.firing_rate.mean() < 1


@pytest.mark.parametrize("family", AUDIO_FAMILIES + ("qwen2",))
@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_batched_equals_unbatched(tiny, family, padding_side):
    model, proc = tiny(family)
    lens = Lens(model, proc)
    names = lens.hook_names("act") + lens.hook_names("post")
    batch = make_batch(lens, family, padding_side)
    _, cache = lens.run_with_cache(batch, names)
    valid = batch.masks.valid
    for i in range(batch.size):
        audios = None if family in TEXT_FAMILIES else [tiny_audio(0.3 + 0.25 * i, freq=180 + 70 * i, seed=i)]
        alone = lens.batch(audios, [PROMPTS[i]], sampling_rate=16000)
        _, c1 = lens.run_with_cache(alone, names)
        for nm in names:
            rows = cache[nm][i][~batch.masks.padding[i]]
            single = c1[nm][0][~alone.masks.padding[0]]
            assert rows.shape == single.shape
            assert (rows - single).abs().max() <= 1e-5, nm
        assert valid[i].sum() == alone.masks.valid[0].sum()


def test_merged_shards_equal_one_pass(tiny):
    model, proc = tiny("qwen2_audio")
    lens = Lens(model, proc)
    idx = torch.tensor([1, 0, 1])
    whole = lens.new_stats(EMOTIONS)  # one pass over the three clips, one clip per batch
    for i in range(3):
        one = lens.batch([tiny_audio(0.3 + 0.25 * i, freq=180 + 70 * i, seed=i)], [PROMPTS[i]], sampling_rate=16000)
        lens.run(one, stats=whole, emotion_index=idx[i:i + 1], logits="none")
    parts = []
    for i in range(3):
        s = lens.new_stats(EMOTIONS)
        one = lens.batch([tiny_audio(0.3 + 0.25 * i, freq=180 + 70 * i, seed=i)], [PROMPTS[i]], sampling_rate=16000)
        lens.run(one, stats=s, emotion_index=idx[i:i + 1], logits="none")
        parts.append(s)
    merged = parts[2].merge(parts[0]).merge(parts[1])  # shards merged in any order
    assert torch.equal(merged.K, whole.K) and torch.equal(merged.T, whole.T)
    assert torch.allclose(merged.sum, whole.sum, atol=1e-9, rtol=0)
    assert torch.equal(merged.n_clips, torch.tensor([1.0, 2.0], dtype=torch.float64))


def test_positions_options(tiny):
    model, proc = tiny("qwen2_audio")
    lens = Lens(model, proc)
    batch = make_batch(lens, "qwen2_audio")
    n_audio = (batch.inputs["input_ids"] == proc.tokenizer.convert_tokens_to_ids("<|AUDIO|>")).sum(1)
    # Whisper frames (100/s) -> conv stride 2 -> pool 2: about 25 audio tokens per second
    frames = [30, 55, 80]
    assert n_audio.tolist() == [(((f - 1) // 2 + 1) - 2) // 2 + 1 for f in frames] == [7, 14, 20]
    for positions, expected in [("audio", int(n_audio.sum())), ("last", 3),
                                ("valid", int(batch.masks.valid.sum()))]:
        s = lens.new_stats(EMOTIONS, positions=positions)
        lens.run(batch, stats=s, emotion_index=torch.tensor([0, 0, 1]), logits="none")
        assert int(s.T.sum()) == expected, positions
    no_prompt = batch.masks.select("no_prompt").sum()
    assert 0 < no_prompt < batch.masks.valid.sum()


def test_stats_save_load_and_refusals(tiny, tmp_path):
    model, proc = tiny("qwen2_audio")
    lens = Lens(model, proc)
    s = lens.new_stats(EMOTIONS)
    lens.run(make_batch(lens, "qwen2_audio"), stats=s, emotion_index=torch.tensor([0, 1, 1]), logits="none")
    p = tmp_path / "stats.safetensors"
    s.save(p)
    back = NeuronStats.load(p, expect_fingerprint=lens.fingerprint, expect_site="act")
    assert torch.equal(back.K, s.K) and back.emotions == EMOTIONS
    other = Lens(*tiny("audio_flamingo3"))
    with pytest.raises(IncompatibleError, match="recorded from model"):
        NeuronStats.load(p, expect_fingerprint=other.fingerprint)
    with pytest.raises(IncompatibleError, match="site 'act', not 'post'"):
        NeuronStats.load(p, expect_site="post")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(Exception, match="not a readable esn_lens neuron_stats file"):
        NeuronStats.load(bad)
    with pytest.raises(IncompatibleError, match="site differs"):
        s.merge(lens.new_stats(EMOTIONS, site="pre"))


def test_bad_audio_inputs_get_clear_errors(tiny):
    lens = Lens(*tiny("qwen2_audio"))
    good = tiny_audio(0.3)
    cases = [
        ([np.zeros(0, np.float32)], {}, "empty"),
        ([np.full(1600, np.nan, np.float32)], {}, "NaN or inf"),
        ([np.stack([good, good], 1)], {}, "mono"),
        ([good], {"resample": False, "sampling_rate": 8000}, "expected 16000 Hz"),
        ([np.array(["a"])], {}, "numeric"),
    ]
    for audios, kw, msg in cases:
        kw = {"sampling_rate": 16000, **kw}
        with pytest.raises(InputError, match=msg):
            lens.batch(audios, "x", **kw)
    with pytest.raises(InputError, match="sampling_rate is required"):
        lens.batch([good], "x")
    # a documented resample: 8 kHz audio becomes 16 kHz (same number of audio tokens as at 16 kHz)
    b8 = lens.batch([good[::2]], "x", sampling_rate=8000)
    b16 = lens.batch([good], "x", sampling_rate=16000)
    assert b8.masks.audio.sum() == b16.masks.audio.sum()


def test_unknown_label_and_unsupported_model(tiny):
    lens = Lens(*tiny("qwen2_audio"))
    s = lens.new_stats(EMOTIONS)
    with pytest.raises(InputError, match=r"unknown emotion label\(s\) \['sad'\]"):
        s.emotion_index(["angry", "sad"])
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50))
    with pytest.raises(UnsupportedModelError, match="no esn_lens adapter for GPT2LMHeadModel.*qwen2_audio"):
        Lens(gpt2)
    with pytest.raises(InputError, match="unknown site"):
        lens.new_stats(EMOTIONS, site="mlp_out")


def test_hook_names_and_sites(tiny):
    lens = Lens(*tiny("qwen2_5_omni_thinker"))
    assert lens.hook_names("act") == ["blocks.0.mlp.hook_act", "blocks.1.mlp.hook_act"]
    assert parse_hook_name("blocks.1.mlp.hook_pre") == (1, "pre")
    assert lens.adapter.site_path(1, "post") == ("model.language_model.layers.1.mlp.down_proj", "input")
    with pytest.raises(InputError, match="layer 2 out of range"):
        lens.adapter.site_path(2, "act")
    with pytest.raises(InputError, match="unknown hook name"):
        parse_hook_name("blocks.x.attn")
    # the paper's site: act == silu(pre)
    b = make_batch(lens, "qwen2_5_omni_thinker")
    _, cache = lens.run_with_cache(b, [hook_name(0, "pre"), hook_name(0, "act")])
    assert torch.allclose(torch.nn.functional.silu(cache["blocks.0.mlp.hook_pre"]), cache["blocks.0.mlp.hook_act"], atol=1e-6)


def test_omni_full_model_goes_through_thinker(tiny):
    from transformers import Qwen2_5OmniConfig, Qwen2_5OmniForConditionalGeneration

    thinker, proc = tiny("qwen2_5_omni_thinker")
    cfg = Qwen2_5OmniConfig(thinker_config=thinker.config.to_dict(), enable_audio_output=False)
    full = Qwen2_5OmniForConditionalGeneration(cfg)
    lens = Lens(full, proc)
    assert lens.adapter.name == "qwen2_5_omni" and lens.adapter.root() is full.thinker
    s = lens.new_stats(EMOTIONS)
    lens.run(make_batch(lens, "qwen2_5_omni_thinker"), stats=s, emotion_index=torch.tensor([0, 1, 0]), logits="none")
    assert s.T.sum() > 0


@pytest.mark.parametrize("family", ["qwen2_audio", "qwen2_5_omni_thinker", "audio_flamingo3", "qwen2"])
def test_from_pretrained_local_folder(tiny, tmp_path, family):
    model, proc = tiny(family)
    model.save_pretrained(tmp_path)
    proc.save_pretrained(tmp_path)
    lens = Lens.from_pretrained(str(tmp_path))
    ref = Lens(model, proc)
    assert type(lens.model) is type(model) and lens.adapter.name == ref.adapter.name
    assert lens.fingerprint == ref.fingerprint
    b1, b2 = make_batch(lens, family, n=2), make_batch(ref, family, n=2)
    assert torch.equal(b1.inputs["input_ids"], b2.inputs["input_ids"])
    assert torch.allclose(lens.run(b1).logits, ref.run(b2).logits, atol=1e-5)


def test_collect_stats_streams_clips(tiny):
    from esn_lens.data import EmotionClip

    lens = Lens(*tiny("qwen2_audio"))
    clips = [EmotionClip(f"c{i}", EMOTIONS[i % 2], audio=tiny_audio(0.3, freq=200 + 20 * i, seed=i), sampling_rate=16000)
             for i in range(5)]
    s = lens.collect_stats(clips, "Which emotion?", EMOTIONS, batch_size=2, progress=False)
    assert s.n_clips.tolist() == [3.0, 2.0]
    one = lens.new_stats(EMOTIONS)
    b = lens.batch_clips(clips, "Which emotion?")
    lens.run(b, stats=one, emotion_index=one.emotion_index(b.labels), logits="none")
    assert torch.equal(one.K, s.K) and torch.equal(one.T, s.T)
    assert torch.allclose(one.sum, s.sum, atol=1e-9, rtol=0)


def test_collect_stats_per_clip_prompts_and_resume(tiny):
    from esn_lens.data import EmotionClip

    lens = Lens(*tiny("qwen2_audio"))
    clips = [EmotionClip(f"c{i}", EMOTIONS[i % 2], audio=tiny_audio(0.3, freq=200 + 20 * i, seed=i), sampling_rate=16000)
             for i in range(5)]
    prompts = [f"Clip {i}: which emotion?" for i in range(5)]
    seen = []
    whole = lens.collect_stats(clips, prompts, EMOTIONS, batch_size=2, progress=False,
                               on_batch=lambda n, s: seen.append(n))
    assert seen == [2, 4, 5]
    # resume after the first batch: partial stats + start reproduce the whole pass exactly
    part = lens.collect_stats(clips[:2], prompts[:2], EMOTIONS, batch_size=2, progress=False)
    resumed = lens.collect_stats(clips, prompts, EMOTIONS, batch_size=2, progress=False, stats=part, start=2)
    assert torch.equal(resumed.K, whole.K) and torch.equal(resumed.sum, whole.sum)
    # per-clip prompts matter: the prompt text is counted
    same = lens.collect_stats(clips, "x", EMOTIONS, batch_size=2, progress=False)
    assert not torch.equal(same.T, whole.T)
    with pytest.raises(InputError, match="3 prompts for 5 clips"):
        lens.collect_stats(clips, prompts[:3], EMOTIONS, progress=False)
