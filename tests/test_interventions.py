"""Interventions and the causal validation protocol on tiny real models (planted and random)."""
import numpy as np
import pytest
import torch

from esn_lens.data import EmotionClip
from esn_lens.errors import InputError
from esn_lens.evaluate import (SEREvaluator, accuracy_change_heatmap, bootstrap_ci, identification_pool, specificity)
from esn_lens.interventions import (INTERVENTIONS, AddTo, Condition, FunctionEdit, Gain, add, deactivate, make_edit,
                                    mean_ablate, steer)
from esn_lens.lens import Lens
from esn_lens.prompts import build_prompt, parse_answer
from esn_lens.testing import tiny_audio
from esn_lens.testing.planted import build_planted, planted_clips

EM = ("angry", "happy", "neutral", "sad")


@pytest.fixture(scope="module")
def planted():
    model, tok, units = build_planted(EM)
    return Lens(model, tok), units, planted_clips(5, EM)


def unit_mask(units, lens):
    m = torch.zeros(lens.n_layers, lens.d_mlp, dtype=torch.bool)
    for layer, n in units:
        m[layer, n] = True
    return m


def random_mask(lens, k, seed, exclude):
    g = torch.Generator().manual_seed(seed)
    m = torch.zeros(lens.n_layers * lens.d_mlp, dtype=torch.bool)
    free = (~exclude.reshape(-1)).nonzero().squeeze(1)
    m[free[torch.randperm(free.numel(), generator=g)[:k]]] = True
    return m.reshape(lens.n_layers, lens.d_mlp)


def test_deactivating_planted_set_is_specific_and_random_is_not(planted):
    lens, units, clips = planted
    ev = SEREvaluator(lens, EM, answer="word")
    all_planted = torch.stack([unit_mask(units[e], lens) for e in EM]).any(0)
    conds = [Condition("baseline")]
    conds += [Condition(f"mask:{e}", [deactivate(unit_mask(units[e], lens))]) for e in EM]
    res = ev.run(clips, conds)
    assert res["baseline"].per_class() == {e: 1.0 for e in EM}
    H = accuracy_change_heatmap(res, EM)
    np.testing.assert_array_equal(H, -np.eye(4))  # that emotion lost entirely, the others untouched
    s = specificity(H)
    assert s["se_mean"] == -1.0 and s["ace_mean"] == 0.0 and s["ess_mean"] == -1.0
    rconds = [Condition("baseline")] + [
        Condition(f"mask:{e}", [deactivate(random_mask(lens, len(units[e]), i, all_planted))]) for i, e in enumerate(EM)]
    Hr = accuracy_change_heatmap(ev.run(clips, rconds), EM)
    np.testing.assert_array_equal(Hr, np.zeros((4, 4)))


def test_steering_raises_target_share_monotonically(planted):
    lens, units, clips = planted
    ev = SEREvaluator(lens, EM, answer="word")
    alphas = [0, 1, 2, 3, 5]
    all_planted = torch.stack([unit_mask(units[e], lens) for e in EM]).any(0)
    for i, e in enumerate(EM):
        conds = [Condition("baseline")] + [Condition(f"a{a}", [steer(unit_mask(units[e], lens), a)]) for a in alphas]
        res = ev.run(clips, conds)
        shares = [res[f"a{a}"].share(e) for a in alphas]
        assert shares[0] == res["baseline"].share(e) == 0.25
        assert all(b >= a for a, b in zip(shares, shares[1:])) and shares[-1] == 1.0, shares
        rnd = random_mask(lens, len(units[e]), 10 + i, all_planted)
        rres = ev.run(clips, [Condition("baseline")] + [Condition(f"a{a}", [steer(rnd, a)]) for a in alphas])
        assert [rres[f"a{a}"].share(e) for a in alphas] == [0.25] * len(alphas)


def test_batched_conditions_equal_one_at_a_time_and_encoder_reuse_equals_recompute(tiny):
    lens = Lens(*tiny("qwen2_audio"))
    clips = [EmotionClip(f"c{i}", EM[i % 4], audio=tiny_audio(0.3 + 0.1 * i, freq=150 + 40 * i, seed=i),
                         sampling_rate=16000) for i in range(6)]
    g = torch.Generator().manual_seed(0)
    masks = [torch.rand(2, 64, generator=g) < 0.2 for _ in range(3)]
    conds = [Condition("baseline"), Condition("d0", [deactivate(masks[0])]),
             Condition("s1", [steer(masks[1], 3.0)]), Condition("both", [deactivate(masks[0]), add(masks[2], 0.5)])]
    prompts = [build_prompt(EM, c.utterance_id).text for c in clips]
    base = lens.batch_clips(clips, prompts)
    ref = {c.name: lens.run(base, edits=c.edits).logits for c in conds}  # one condition at a time, re-encoding
    audio = lens.run(base, logits="none", keep_audio=True).audio
    ev_rows = SEREvaluator(lens, EM, batch_size=6)._row_edits(conds, base.size)
    batched = lens.run(base.tile(len(conds)), edits=ev_rows, audio_cache=audio).logits
    recomputed = lens.run(base.tile(len(conds)), edits=ev_rows).logits
    n = base.size
    assert torch.equal(batched, recomputed)  # encoder reuse == recompute, exactly
    for ci, c in enumerate(conds):
        assert (batched[ci * n:(ci + 1) * n] - ref[c.name]).abs().max() <= 1e-5, c.name
    assert not torch.allclose(ref["baseline"], ref["s1"])
    # and through the evaluator, batched/reused vs a plain loop over conditions
    ev = SEREvaluator(lens, EM, batch_size=3)
    together = ev.run(clips, conds)
    ev_plain = SEREvaluator(lens, EM, batch_size=3, encoder_reuse=False)
    for c in conds:
        alone = ev_plain.run(clips, [c])[c.name]
        assert alone.predictions == together[c.name].predictions


def test_model_unchanged_after_runs(tiny):
    model, proc = tiny("audio_flamingo3")
    lens = Lens(model, proc)
    b = lens.batch([tiny_audio(0.4)], "x", sampling_rate=16000)
    before_params = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        before = model(**b.inputs).logits
    u = torch.ones(2, 64, dtype=torch.bool)
    lens.run(b, edits=[steer(u, 5.0)], record=lens.hook_names("act"))
    lens.run(b, edits=[deactivate(u)], max_new_tokens=3)
    with torch.no_grad():
        after = model(**b.inputs).logits
    assert torch.equal(before, after)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before_params.items())
    assert not model._forward_hooks and not model._forward_pre_hooks


def test_edits_compose_in_order_and_match_manual_values(tiny):
    lens = Lens(*tiny("qwen2"))
    b = lens.batch(None, ["hello there"])
    _, clean = lens.run_with_cache(b, ["blocks.1.mlp.hook_act"])
    u = torch.zeros(2, 64, dtype=torch.bool)
    u[1, :8] = True
    rows = torch.tensor([True])
    _, edited = lens.run_with_cache(b, ["blocks.1.mlp.hook_act"],
                                    edits=[Gain(u, gain=2.0), AddTo(u, delta=1.0, rows=rows)])
    x, y = clean["blocks.1.mlp.hook_act"], edited["blocks.1.mlp.hook_act"]
    torch.testing.assert_close(y[..., :8], x[..., :8] * 2 + 1)
    torch.testing.assert_close(y[..., 8:], x[..., 8:])
    # order matters: add then gain = (x + 1) * 2
    _, other = lens.run_with_cache(b, ["blocks.1.mlp.hook_act"], edits=[AddTo(u, delta=1.0), Gain(u, gain=2.0)])
    torch.testing.assert_close(other["blocks.1.mlp.hook_act"][..., :8], (x[..., :8] + 1) * 2)


def test_mean_ablation_sets_units_to_their_mean(tiny):
    lens = Lens(*tiny("qwen2"))
    b = lens.batch(None, ["hello there", "a much longer second prompt"])
    stats = lens.new_stats(("a", "b"))
    lens.run(b, stats=stats, emotion_index=torch.tensor([0, 1]), logits="none")
    u = torch.zeros(2, 64, dtype=torch.bool)
    u[0, 3] = True
    _, c = lens.run_with_cache(b, ["blocks.0.mlp.hook_act"], edits=[mean_ablate(u, stats)])
    expected = (stats.sum[:, 0, 3].sum() / stats.T.sum()).float()
    assert torch.allclose(c["blocks.0.mlp.hook_act"][:, :, 3], expected.expand(2, c["blocks.0.mlp.hook_act"].shape[1]))


def test_user_registered_intervention(planted):
    lens, units, clips = planted

    @INTERVENTIONS.register("negate_test")
    def negate(units, site="act", rows=None):
        return FunctionEdit(units, site=site, rows=rows, fn=lambda v, layer, m: -v)

    try:
        e = make_edit("negate_test", unit_mask(units["sad"], lens))
        res = SEREvaluator(lens, EM, answer="word").run(clips, [Condition("baseline"), Condition("neg", [e])])
        assert res["neg"].per_class()["sad"] == 0.0 and res["neg"].per_class()["angry"] == 1.0
    finally:
        INTERVENTIONS.unregister("negate_test")
    with pytest.raises(KeyError, match="unknown intervention 'nope'; registered: add, deactivate"):
        make_edit("nope", unit_mask(units["sad"], lens))


def test_generation_applies_edits_at_every_step(planted):
    lens, units, clips = planted
    ev = SEREvaluator(lens, EM, answer="word", mode="generate", max_new_tokens=3)
    conds = [Condition("baseline"), Condition("mask:angry", [deactivate(unit_mask(units["angry"], lens))])]
    res = ev.run(clips[:8], conds)
    # reference: plain torch forward hooks during model.generate
    m = unit_mask(units["angry"], lens)
    mod = lens.adapter.site_module(1, "act")
    h = mod.register_forward_hook(lambda mo, i, o: o * (~m[1]).to(o.dtype))
    try:
        b = lens.batch_clips(clips[:8], [ev.prompt(c).text for c in clips[:8]])
        with torch.no_grad():
            seq = lens.model.generate(**b.inputs, max_new_tokens=3, do_sample=False, pad_token_id=lens.tokenizer.pad_token_id)
    finally:
        h.remove()
    ref = lens.tokenizer.batch_decode(seq[:, b.inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert res["mask:angry"].answers == ref
    assert res["baseline"].answers != ref


def test_identification_pool_balanced_and_correct(planted):
    lens, units, clips = planted
    ev = SEREvaluator(lens, EM, answer="word")
    weakened = Lens(lens.model, lens.tokenizer)
    pool = identification_pool(ev, clips, cap=3)
    assert sorted(c.emotion for c in pool) == sorted(EM * 3)
    assert len({c.utterance_id for c in pool}) == 12
    # with the 'sad' units removed from the model's answers via an evaluator condition, sad clips are never correct
    res = ev.run(pool, [Condition("x", [deactivate(unit_mask(units["sad"], weakened))])])["x"]
    assert res.per_class()["sad"] == 0.0


@pytest.mark.parametrize("answer,expected", [
    ("3", "sad"), ("Option 3.", "sad"), ("three", "sad"), ("The third one", "sad"),
    ("I think the speaker sounds angry", "angry"), ("angry or sad", None), ("", None), ("   ", None),
    ("1 and 2", None), ("9", None), ("Answer: 2) happy", "happy"), ("NEUTRAL!", "neutral"), ("0.5", None),
])
def test_parse_answer(answer, expected):
    assert parse_answer(answer, ("angry", "happy", "sad", "neutral")) == expected


def test_prompt_options_shuffle_per_clip_seeded():
    a = build_prompt(EM, "clip1", seed=0)
    assert a == build_prompt(EM, "clip1", seed=0)
    orders = {build_prompt(EM, f"clip{i}", seed=0).options for i in range(20)}
    assert len(orders) > 5 and all(sorted(o) == sorted(EM) for o in orders)
    assert "1. " + a.options[0] in a.text and a.option_of(a.options[2]) == 3


def test_metrics_on_constructed_heatmap():
    H = np.array([[-0.3, 0.0, 0.1], [0.0, -0.2, 0.0], [0.05, 0.05, -0.1]])
    s = specificity(H)
    np.testing.assert_allclose(s["se"], [-0.3, -0.2, -0.1])
    np.testing.assert_allclose(s["ace"], [0.025, 0.025, 0.05])
    np.testing.assert_allclose(s["ess"], [-0.325, -0.225, -0.15])
    with pytest.raises(InputError, match="square"):
        specificity(np.zeros((2, 3)))
    lo, hi = bootstrap_ci(np.array([0, 0, 1, 0, 0, 1] * 5), np.ones(30))
    assert lo <= -2 / 3 <= hi and hi < 0


def test_bad_edit_inputs(planted, tiny):
    lens, units, clips = planted
    with pytest.raises(InputError, match=r"units mask has shape \(3, 64\)"):
        lens.run(lens.batch(None, ["x"]), edits=[deactivate(torch.zeros(3, 64, dtype=torch.bool))])
    with pytest.raises(InputError, match="boolean"):
        deactivate(torch.zeros(2, 64))
    with pytest.raises(InputError, match=r"label\(s\) \['fearful'\] outside the evaluated set"):
        SEREvaluator(lens, EM).run([EmotionClip("x", "fearful", text="eek")])


@pytest.mark.parametrize("family", ["qwen2_audio", "audio_flamingo3", "qwen2_5_omni_thinker"])
def test_audio_reuse_equals_recompute_for_every_audio_family(tiny, family):
    lens = Lens(*tiny(family))
    b = lens.batch([tiny_audio(0.3), tiny_audio(0.6, freq=310)], ["Which emotion?", "Emotion?"], sampling_rate=16000)
    cache = lens.run(b, logits="none", keep_audio=True).audio
    expected_kind = "tower" if family == "qwen2_5_omni_thinker" else "embeds"
    assert cache.kind == expected_kind
    u = torch.zeros(2, 64, dtype=torch.bool)
    u[0, :5] = True
    rows = torch.tensor([False, False, True, True, False, False])
    edits = [steer(u, 2.0, rows=rows)]
    reused = lens.run(b.tile(3), edits=edits, audio_cache=cache).logits
    recomputed = lens.run(b.tile(3), edits=edits).logits
    assert torch.equal(reused, recomputed)
    assert not torch.equal(reused[2:4], reused[:2])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_gain_on_one_row_block_in_half_precision_touches_only_those_units(dtype):
    """The fast path (a condition's rows are one block) runs in every float dtype: the product in float32 as the
    full-factor path computes it, rounded to the dtype, saturated to its finite range; nothing else changes."""
    v = torch.randn(6, 3, 8, generator=torch.Generator().manual_seed(0)).to(dtype)
    mask = torch.zeros(6, 8, dtype=torch.bool)
    mask[2:4, [1, 5]] = True
    fi = torch.finfo(dtype)
    for gain in (0.0, 3.0, 1e30):
        out = v.clone()
        Gain(torch.zeros(1, 8, dtype=torch.bool), gain=gain).edit_(out, 0, mask)
        want = v.clone()
        want[2:4][..., [1, 5]] = (v[2:4][..., [1, 5]].float() * gain).to(dtype).clamp(fi.min, fi.max)
        assert torch.equal(out, want), gain
        assert torch.isfinite(out).all()
