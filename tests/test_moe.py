"""Expert neurons of the tiny Qwen3-Omni thinker: exact statistics, routing, edits and selection against an
independent plain-torch re-implementation of the MoE block (tests/moe_reference.py)."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from esn_lens import Lens, deactivate, find_neurons, steer
from esn_lens.errors import InputError
from esn_lens.moe_stats import RouterStats, expert_units, find_experts, route_site
from esn_lens.stats import NeuronStats
from esn_lens.testing import build_tiny
from esn_lens.testing.tiny import tiny_audio
from esn_lens.testing.tiny_moe import build_planted_moe, planted_moe_prompts

from moe_reference import LoopStats, gain_edit, install_reference

EMOTIONS = ("angry", "happy")


def fresh():
    return build_tiny("qwen3_omni_moe_thinker", seed=0)


@pytest.fixture(scope="module")
def setup():
    model, proc = fresh()
    lens = Lens(model, proc)
    batch = lens.batch([tiny_audio(0.5), tiny_audio(0.8, freq=300, seed=1), tiny_audio(0.6, freq=500, seed=2)],
                       ["Which emotion?", "How does it sound?", "Name the emotion."], sampling_rate=16000,
                       labels=["angry", "happy", "angry"])
    ref_model, _ = fresh()  # an untouched copy (transformers' own experts implementation until hooked)
    return lens, batch, ref_model


def units_spanning_experts(lens) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    return torch.rand(lens.n_layers, lens.d_mlp, generator=g) < 0.3


class Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_adapter_shape_and_switch_log():
    model, proc = fresh()
    log, got = logging.getLogger("esn_lens.moe"), Lines()
    log.addHandler(got)
    level = log.level
    log.setLevel(logging.INFO)
    try:
        lens = Lens(model, proc)
        Lens(model, proc)  # already switched: no second line
    finally:
        log.removeHandler(got)
        log.setLevel(level)
    lines = [m for m in got.lines if "exact per-expert path" in m]
    assert len(lines) == 1 and "'grouped_mm' replaced" in lines[0]
    a = lens.adapter
    assert a.name == "qwen3_omni_moe" and (a.n_experts, a.top_k, a.d_expert) == (4, 2, 16)
    assert lens.d_mlp == a.n_experts * a.d_expert == 64
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in fresh()[0].parameters())


def test_forward_equals_reference_and_transformers(setup):
    lens, batch, ref_model = setup
    out = lens.run(batch, logits="all").logits
    with torch.no_grad():
        native = ref_model(**batch.inputs).logits  # transformers' grouped_mm experts
        handles = install_reference(ref_model)
        try:
            ref = ref_model(**batch.inputs).logits
        finally:
            for h in handles:
                h.remove()
    assert (out - ref).abs().max() <= 1e-5
    assert (out - native).abs().max() <= 1e-5


def test_stats_and_routing_equal_the_reference_loop(setup):
    lens, batch, ref_model = setup
    stats = lens.new_stats(EMOTIONS)
    rs = RouterStats.for_lens(lens, EMOTIONS)
    with lens.trace(batch):
        stats.record(lens)
        rs.record(lens)
    counted = batch.masks.select("valid").numpy()
    rows = [EMOTIONS.index(l) for l in batch.labels]
    loop = LoopStats(counted, rows, 2, lens.n_layers, 4, 16)
    handles = install_reference(ref_model, record=loop)
    try:
        with torch.no_grad():
            ref_model(**batch.inputs)
    finally:
        for h in handles:
            h.remove()
    assert stats.routed and stats.T.shape == stats.K.shape == (2, 2, 64)
    assert np.array_equal(stats.T.numpy(), loop.T) and np.array_equal(stats.K.numpy(), loop.K)
    np.testing.assert_allclose(stats.sum.numpy(), loop.S, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(stats.sumsq.numpy(), loop.Q, rtol=1e-6, atol=1e-6)
    assert stats.tokens.tolist() == [float(counted[[0, 2]].sum()), float(counted[1].sum())]
    assert len(set(stats.T[0, 0].tolist())) > 1
    assert np.array_equal(rs.counts.numpy(), loop.counts)
    np.testing.assert_allclose(rs.prob_sum.numpy(), loop.prob_sum, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(rs.frequency.sum(-1).numpy(), 2.0)  # top-2: each token counted at two experts


def test_files_record_routed_stats(setup, tmp_path):
    lens, batch, _ = setup
    stats = lens.new_stats(EMOTIONS)
    lens.run(batch, stats=stats, emotion_index=torch.tensor([0, 1, 0]), logits="none")
    stats.save(tmp_path / "s.safetensors")
    back = NeuronStats.load(tmp_path / "s.safetensors")
    assert back.routed and torch.equal(back.T, stats.T) and torch.equal(back.tokens, stats.tokens)
    assert torch.equal(back.firing_rate, stats.firing_rate)
    merged = NeuronStats.from_state_dict(stats.state_dict()).merge(back)
    assert torch.equal(merged.T, 2 * stats.T)
    dense = NeuronStats(EMOTIONS, lens.n_layers, lens.d_mlp, model_fingerprint=stats.model_fingerprint)
    with pytest.raises(Exception, match="routed differs"):
        dense.merge(stats)
    with pytest.raises(InputError, match="routed stats count routed tokens"):
        stats.add(torch.zeros(2, 1, 3, 64), torch.tensor([0]), torch.ones(1, 3, dtype=torch.bool))


@pytest.mark.parametrize("gain", [0.0, 2.0])
def test_expert_unit_edits_equal_the_reference_loop(setup, gain):
    lens, batch, ref_model = setup
    units = units_spanning_experts(lens)
    edit = deactivate(units) if gain == 0.0 else steer(units, alpha=1.0)
    out = lens.run(batch, edits=[edit], logits="all").logits
    handles = install_reference(ref_model, edit=gain_edit(units, gain, 16))
    try:
        with torch.no_grad():
            ref = ref_model(**batch.inputs).logits
    finally:
        for h in handles:
            h.remove()
    base = lens.run(batch, logits="all").logits
    assert (out - ref).abs().max() <= 1e-5
    assert (out - base).abs().max() > 1e-3  # the edit matters


@pytest.mark.parametrize("gain", [0.0, 2.0])
def test_expert_unit_edits_in_greedy_generation(setup, gain):
    lens, batch, ref_model = setup
    units = units_spanning_experts(lens)
    edit = deactivate(units) if gain == 0.0 else steer(units, alpha=1.0)
    with lens.generate(batch, max_new_tokens=4, output_scores=True, return_dict_in_generate=True) as tracer:
        edit.apply(lens)
        res = tracer.result.save()
    handles = install_reference(ref_model, edit=gain_edit(units, gain, 16))
    try:
        with torch.no_grad():
            ref = ref_model.generate(**batch.inputs, max_new_tokens=4, do_sample=False, output_scores=True,
                                     return_dict_in_generate=True, pad_token_id=lens.tokenizer.pad_token_id)
    finally:
        for h in handles:
            h.remove()
    assert torch.equal(res.sequences, ref.sequences)
    assert max(float((a - b).abs().max()) for a, b in zip(res.scores, ref.scores)) <= 1e-5


def test_open_access_dense_view_edit_and_gradients(setup):
    lens, batch, _ = setup
    with lens.trace(batch):
        routed = route_site(lens, 0).save()
        act = lens.blocks[0].mlp.hook_act.output.clone().save()
        lens.blocks[0].mlp.hook_act.output[:] = 0.0  # the user's own edit: expert units of layer 0 off
        zero_logits = lens.logits.output.save()
    assert act.shape == (3, batch.inputs["input_ids"].shape[1], 64)
    unrouted = (routed == 0).repeat_interleave(16, dim=-1)
    assert bool((act[unrouted] == 0).all()) and bool((act[~unrouted] != 0).any())
    ref = lens.run(batch, edits=[deactivate(torch.tensor([[True] * 64, [False] * 64]))], logits="all").logits
    assert (zero_logits - ref).abs().max() <= 1e-5
    with lens.trace(batch):  # zero routing weights remove the experts' contributions: the same as zero units
        route_site(lens, 0).output[:] = 0.0
        no_route = lens.logits.output.save()
    assert (no_route - ref).abs().max() <= 1e-5
    from esn_lens import collect_attribution  # gradients reach expert units: attribution patching (atp) works
    from esn_lens.data.clip import EmotionClip

    clips = [EmotionClip(f"c{i}", e, audio=tiny_audio(0.5, freq=200 + 90 * i, seed=i), sampling_rate=16000)
             for i, e in enumerate(["angry", "happy", "angry", "happy"])]
    att = collect_attribution(lens, clips, EMOTIONS, batch_size=2, progress=False, answer="digit")
    scores = find_neurons(att, "atp", count=3)
    assert att.sum.shape == (2, 2, 64) and float(att.sum.abs().sum()) > 0 and scores.counts == {"angry": 3, "happy": 3}


def test_planted_expert_units_and_experts_are_recovered():
    emotions = ("angry", "happy", "neutral", "sad")
    model, proc, planted = build_planted_moe(emotions)
    lens = Lens(model, proc)
    prompts, labels = [], []
    for e in emotions:
        p = planted_moe_prompts(e, 2)
        prompts += p
        labels += [e] * len(p)
    batch = lens.batch(None, prompts, labels=labels)
    stats, rs = lens.new_stats(emotions), RouterStats.for_lens(lens, emotions)
    with lens.trace(batch):
        stats.record(lens)
        rs.record(lens)
    for selector in ("lape", "conact", "mad", "mean_diff", "cohens_d"):
        ns = find_neurons(stats, selector, count=2)
        for e in emotions:
            found = {tuple(x) for x in ns.indices(e).tolist()}
            assert found == set(planted[e]), (selector, e)  # precision and recall 1.0
    experts = find_experts(rs, "lape", top_frac=1 / 12)  # one (layer, expert) of 12 per emotion
    assert experts.nonzero().tolist() == [[i, 0, i] for i in range(4)]
    for sel, on in (("lape", "prob"), ("freq_diff", "frequency"), ("freq_diff", "prob")):
        assert torch.equal(find_experts(rs, sel, top_frac=1 / 12, on=on), experts), (sel, on)
    units = expert_units(experts[0], lens.adapter.d_expert)
    assert units.shape == (2, 96) and units[0, :16].all() and int(units.sum()) == 16


def test_mean_ablate_and_add_on_expert_units_equal_the_reference_loop(setup):
    from esn_lens import add, mean_ablate

    lens, batch, ref_model = setup
    stats = lens.new_stats(EMOTIONS)
    lens.run(batch, stats=stats, emotion_index=torch.tensor([0, 1, 0]), logits="none")
    units = units_spanning_experts(lens)
    means = stats.overall_mean.to(torch.float32)  # per unit: the mean over the tokens routed to its expert
    assert torch.allclose(means, (stats.sum.sum(0) / stats.T.sum(0).clamp(min=1)).float())
    for edit, ref_edit in ((mean_ablate(units, stats), lambda l, e, a: torch.where(
                               units[l, e * 16:(e + 1) * 16], means[l, e * 16:(e + 1) * 16], a)),
                           (add(units, 0.25), lambda l, e, a: a + 0.25 * units[l, e * 16:(e + 1) * 16])):
        out = lens.run(batch, edits=[edit], logits="all").logits
        handles = install_reference(ref_model, edit=ref_edit)
        try:
            with torch.no_grad():
                ref = ref_model(**batch.inputs).logits
        finally:
            for h in handles:
                h.remove()
        assert (out - ref).abs().max() <= 1e-5, type(edit).__name__


def test_full_qwen3_omni_model_through_its_thinker(setup):
    from transformers import Qwen3OmniMoeConfig, Qwen3OmniMoeForConditionalGeneration

    lens_t, batch, _ = setup
    thinker, proc = fresh()
    full = Qwen3OmniMoeForConditionalGeneration(
        Qwen3OmniMoeConfig(thinker_config=thinker.config.to_dict(), enable_audio_output=False)).eval()
    full.thinker.load_state_dict(thinker.state_dict())
    lens = Lens(full, proc)
    assert lens.adapter.name == "qwen3_omni_moe" and lens.adapter.root() is full.thinker
    assert lens.fingerprint == lens_t.fingerprint
    units = units_spanning_experts(lens)
    a = lens.run(batch, edits=[deactivate(units)], logits="all").logits
    b = lens_t.run(batch, edits=[deactivate(units)], logits="all").logits
    assert (a - b).abs().max() <= 1e-5


def test_moe_operations_refuse_bad_input(setup):
    lens, batch, _ = setup
    dense = Lens(*build_tiny("qwen2", seed=0))
    with pytest.raises(InputError, match="not a mixture-of-experts model"):
        RouterStats.for_lens(dense, EMOTIONS)
    with pytest.raises(InputError, match="not a mixture-of-experts model"):
        route_site(dense, 0)
    with pytest.raises(InputError, match="layer 5 out of range 0..1"):
        route_site(lens, 5)
    with pytest.raises(InputError, match="routing site must be 'route' or 'router', got 'gate'"):
        route_site(lens, 0, "gate")
    rs = RouterStats.for_lens(lens, EMOTIONS)
    with pytest.raises(InputError, match="no counted tokens for emotion"):
        rs.frequency
    with pytest.raises(InputError, match=r"top_frac must be in \(0, 1\], got 2"):
        find_experts(rs, top_frac=2)
    assert not dense.new_stats(EMOTIONS).routed and dense.new_stats(EMOTIONS).T.shape == (2, 1, 1)
