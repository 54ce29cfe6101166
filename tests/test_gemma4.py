"""Gemma 4 beyond the common family tests (tests/test_families.py): a KV-shared layer, per-layer embeddings and the
logit soft-cap on a tiny real 3-layer model; constructed statistics of planted units in the KV-shared layer;
encoder reuse; the refused variants (MoE block, E2B's double-wide MLP)."""
from __future__ import annotations

import copy

import pytest
import torch

from esn_lens import deactivate, find_neurons, steer
from esn_lens.errors import UnsupportedModelError
from esn_lens.lens import Lens
from esn_lens.testing import build_tiny, tiny_audio
from test_families import plain

PROMPTS = ["Which emotion is it?", "Name the emotion"]
CAP = 30.0  # the tiny model's final_logit_softcapping (the release's value)
SMALL_CAP = 0.25  # a cap the tiny model's small logits (|z| < 1) feel


@pytest.fixture(scope="module")
def shared():
    """3 layers: sliding, full, full; the last layer reuses layer 1's keys and values (num_kv_shared_layers=1)."""
    model, proc = build_tiny("gemma4", seed=0, n_layers=3)
    lens = Lens(model, proc)
    b = lens.batch([tiny_audio(0.3, freq=190, seed=1), tiny_audio(0.8, freq=260, seed=2)], PROMPTS, sampling_rate=16000)
    return model, lens, b


def test_the_tiny_model_has_the_release_mechanisms(shared):
    model, lens, _ = shared
    text = model.model.language_model
    assert [layer.self_attn.is_kv_shared_layer for layer in text.layers] == [False, False, True]
    assert text.layers[1].self_attn.store_full_length_kv and not hasattr(text.layers[2].self_attn, "k_proj")
    assert text.hidden_size_per_layer_input == 8 and model.config.text_config.final_logit_softcapping == CAP
    for layer in text.layers:  # the per-layer-embedding gate has its own activation module: never a neuron site
        assert layer.act_fn is not layer.mlp.act_fn
    assert model.model.vision_tower is None and type(lens.processor).__name__ == "AudioOnlyGemma4Processor"


def test_kv_shared_layer_sites_and_edits_equal_plain_hooks(shared):
    _, lens, b = shared
    ref: dict = {}
    plain(lens, b, capture=ref)
    got: dict = {}
    with lens.trace(b):
        for layer in range(3):
            blk = lens.blocks[layer]
            for key, site in (("pre", blk.mlp.hook_pre), ("act", blk.mlp.hook_act), ("post", blk.mlp.hook_post),
                              ("resid_post", blk.hook_resid_post)):
                got[f"{layer}.{key}"] = site.output.save()
    for k, v in got.items():
        assert torch.allclose(v, ref[k], atol=1e-6), k
    u = torch.zeros(3, lens.d_mlp, dtype=torch.bool)
    u[2, [3, 9, 40]] = True  # units of the KV-shared layer only
    last = b.masks.last_token().float().argmax(1)
    for edit, gain in ((deactivate(u), 0.0), (steer(u, alpha=3.0), 4.0)):
        out = lens.run(b, edits=[edit]).logits
        assert torch.allclose(out, plain(lens, b, edit=(u, gain))[torch.arange(2), last], atol=1e-5)
        seq = lens.run(b, edits=[edit], max_new_tokens=4).sequences
        assert torch.equal(seq, plain(lens, b, edit=(u, gain), generate=4))


def test_logits_site_is_the_soft_capped_logits(shared, monkeypatch):
    """``lens.logits`` is the model's returned logits, ``cap * tanh(z / cap)`` of ``lm_head``'s output z."""
    model, lens, b = shared
    monkeypatch.setattr(model.config.text_config, "final_logit_softcapping", SMALL_CAP)
    raw: dict = {}
    h = model.lm_head.register_forward_hook(lambda m, i, o: raw.setdefault("z", o.detach().clone()))
    try:
        logits, cache = lens.run_with_cache(b, ["logits"])
    finally:
        h.remove()
    assert torch.allclose(cache["logits"], SMALL_CAP * torch.tanh(raw["z"] / SMALL_CAP), atol=1e-6)
    assert torch.allclose(cache["logits"], logits, atol=1e-6) and not torch.allclose(logits, raw["z"], atol=1e-2)


def test_encoder_reuse_equals_a_rerun(shared, monkeypatch):
    """Conditions reusing the audio tower's output (the SER evaluator's path) give the logits of rerunning it (both
    soft-capped: the reused path reads the ``logits`` site)."""
    model, lens, b = shared
    monkeypatch.setattr(model.config.text_config, "final_logit_softcapping", SMALL_CAP)
    u = torch.zeros(3, lens.d_mlp, dtype=torch.bool)
    u[0, :20] = True
    audio = lens.run(b, logits="none", keep_audio=True).audio
    assert audio.kind == "tower"
    tiled = b.tile(2)
    rerun = lens.run(tiled, edits=[deactivate(u)], logits="last").logits
    reused = lens.run(tiled, edits=[deactivate(u)], audio_cache=audio, logits="last").logits
    assert torch.allclose(rerun, reused, atol=1e-6) and rerun.abs().max() < SMALL_CAP


def _plant(model, tok, cues: dict[str, str], units: dict[str, list[int]], layer: int) -> None:
    """Plant units of ``layer`` that fire (act > 0) exactly on their emotion's cue tokens, and make every other value
    of the model the same for every cue word: the cue tokens' embeddings (main and per-layer) differ only in the cue
    directions, which nothing reads but the planted units and nothing writes to."""
    CONST, CUE = 0, 1
    cue_dims = list(range(CUE, CUE + len(cues)))
    text = model.model.language_model
    ids = [tok.convert_tokens_to_ids(c) for c in cues.values()]
    with torch.no_grad():
        emb = text.embed_tokens.weight
        emb[ids] = emb[ids[0]].clone()  # the cue words look alike ...
        text.embed_tokens_per_layer.weight[ids] = text.embed_tokens_per_layer.weight[ids[0]].clone()
        emb[:, CONST] = 1.0
        emb[:, cue_dims] = 0.0
        for e, i in enumerate(ids):
            emb[i, CUE + e] = 4.0  # ... but for their own cue direction
        reads = [text.per_layer_model_projection]
        writes = [model.model.embed_audio.embedding_projection]
        for lyr in text.layers:
            att, mlp = lyr.self_attn, lyr.mlp
            reads += [att.q_proj, mlp.gate_proj, mlp.up_proj, lyr.per_layer_input_gate]
            reads += [m for m in (getattr(att, "k_proj", None), getattr(att, "v_proj", None)) if m is not None]
            writes += [att.o_proj, mlp.down_proj, lyr.per_layer_projection]
        for m in reads:
            m.weight[:, cue_dims] = 0.0
        for m in writes:
            m.weight[[CONST] + cue_dims] = 0.0
        gate = text.layers[layer].mlp.gate_proj.weight
        for e, emo in enumerate(cues):
            for u in units[emo]:
                gate[u] = 0.0
                gate[u, CUE + e], gate[u, CONST] = 5.0, -1.0  # > 0 exactly where the cue direction is set


def test_planted_units_in_the_kv_shared_layer_give_constructed_stats():
    """Units planted in the KV-shared layer, behind per-layer embeddings and audio: their firing counts are the cue
    counts of their emotion (0 for the other); every other unit's counts are equal for both emotions (the rows
    differ only in the cue word); LAPE and ConAct select exactly the planted units."""
    cues = {"angry": "grr", "happy": "yay"}
    model, proc = build_tiny("gemma4", seed=1, n_layers=3, extra_words=list(cues.values()))
    units = {"angry": [5, 17], "happy": [30, 61]}
    _plant(model, proc.tokenizer, cues, units, layer=2)
    lens = Lens(model, proc)
    auds = [tiny_audio(0.5, freq=190, seed=1), tiny_audio(0.8, freq=260, seed=2)] * 2
    prompts = [f"{c} {c} said it, {c}! Which emotion?" for c in ("grr", "grr", "yay", "yay")]
    b = lens.batch(auds, prompts, sampling_rate=16000)
    stats = lens.new_stats(tuple(cues))
    lens.run(b, stats=stats, emotion_index=torch.tensor([0, 0, 1, 1]), logits="none")
    K = stats.K
    planted = torch.zeros(3, lens.d_mlp, dtype=torch.bool)
    for e, emo in enumerate(cues):
        for u in units[emo]:
            planted[2, u] = True
            assert K[e, 2, u] == 6 and K[1 - e, 2, u] == 0  # 3 cue tokens per prompt, 2 prompts
    assert torch.equal(K[0][~planted], K[1][~planted]) and K[0][~planted].sum() > 0
    for selector in ("lape", "conact"):  # (MAD is symmetric with two emotions: it picks the same units for both)
        ns = find_neurons(stats, selector, count=2)
        for emo in cues:
            assert sorted(tuple(x) for x in ns.indices(emo).tolist()) == [(2, u) for u in units[emo]], selector


def _variant(**text_changes):
    """The tiny 3-layer model's config with text-config changes, as a new (random) model."""
    from transformers import Gemma4Config, Gemma4ForConditionalGeneration

    model, proc = build_tiny("gemma4", seed=0, n_layers=3)
    d = copy.deepcopy(model.config.to_dict())
    d["text_config"].update(text_changes)
    return Gemma4ForConditionalGeneration(Gemma4Config(**d)), proc


def test_moe_block_and_double_wide_mlp_are_refused_with_one_line():
    moe, proc = _variant(enable_moe_block=True, num_experts=4, top_k_experts=2, moe_intermediate_size=16)
    with pytest.raises(UnsupportedModelError, match="enable_moe_block"):
        Lens(moe, proc)
    wide, proc = _variant(use_double_wide_mlp=True)
    assert wide.model.language_model.layers[2].mlp.gate_proj.out_features == 128  # the KV-shared layer
    with pytest.raises(UnsupportedModelError, match=r"different widths \[64, 128\].*use_double_wide_mlp"):
        Lens(wide, proc)


@pytest.mark.parametrize("n", [639, 640, 641, 16001, 480000, 720000])
def test_unified_time_map_counts_the_processors_frames(n):
    """Gemma 4 Unified: one audio token per started 40 ms frame, no cut at 30 s (720000 samples = 45 s -> 1125)."""
    model, proc = build_tiny("gemma4_unified", seed=2)
    lens = Lens(model, proc)
    b = lens.batch([tiny_audio(n / 16000 + 0.01)[:n]], ["hi"], sampling_rate=16000)
    spans = lens.adapter.audio_token_spans(n)
    assert spans.shape[0] == int(b.masks.audio.sum()) == -(-n // 640)
    assert float(spans[0, 0]) == 0.0 and float(spans[-1, 1]) == n / 16000
    assert torch.equal(spans, lens.adapter.audio_token_spans(n, reach=False))  # no reach beyond the frame


def test_unified_time_map_is_what_each_token_reads():
    """Changing the samples of token k's span changes token k's audio embedding and no other token's; changing
    samples outside it leaves token k unchanged (the map is exact, not an estimate)."""
    model, proc = build_tiny("gemma4_unified", seed=2)
    lens = Lens(model, proc)
    n, k = 16000, 7
    audio = tiny_audio(1.01, seed=3)[:n]
    start, end = (lens.adapter.audio_token_spans(n)[k] * 16000).round().long().tolist()
    assert (start, end) == (640 * k, 640 * (k + 1))

    def embeds(a):
        got = {}
        h = model.model.embed_audio.register_forward_hook(lambda m, i, o: got.setdefault("e", o.detach().clone()))
        try:
            lens.run(lens.batch([a], ["hi"], sampling_rate=16000))
        finally:
            h.remove()
        return got["e"].reshape(-1, got["e"].shape[-1])

    base = embeds(audio)
    inside, outside = audio.copy(), audio.copy()
    inside[start + 100] += 0.5
    outside[end + 10] += 0.5
    changed_in = (embeds(inside) - base).abs().amax(-1) > 0
    changed_out = (embeds(outside) - base).abs().amax(-1) > 0
    assert changed_in.nonzero().flatten().tolist() == [k]
    assert changed_out.nonzero().flatten().tolist() == [k + 1]
