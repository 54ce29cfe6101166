"""Running top-k activations: exact equality with brute force over every (clip, position) of the demo corpus, for
every unit of a discovered set; shards merged and resumed states equal one pass; the documented tie-break."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from esn_lens import Lens
from esn_lens.demo_model import demo_clips, demo_prompt, load_demo_model
from esn_lens.errors import IncompatibleError, InputError
from esn_lens.neuron_data import collect_top
from esn_lens.selectors import find_neurons
from esn_lens.topk import EMPTY, TopActivations, edges_from_stats, parse_units

K, BS = 6, 4


@pytest.fixture(scope="module")
def demo():
    model, proc = load_demo_model()
    lens = Lens(model, proc)
    clips = demo_clips("identification")[::11][:16]
    prompts = [demo_prompt(c.utterance_id) for c in clips]
    stats = lens.collect_stats(clips, prompts, ("angry", "happy", "neutral", "sad"), progress=False, num_workers=0)
    ns = find_neurons(stats, "conact", top_frac=0.02)
    units = ns.all_units().nonzero()
    lo, hi = edges_from_stats(stats, units)
    batches = [lens.batch_clips(clips[i:i + BS], prompts[i:i + BS]) for i in range(0, len(clips), BS)]
    return lens, clips, prompts, batches, units, lo, hi


def _new(lens, units, lo, hi):
    return TopActivations(units, ("angry", "happy", "neutral", "sad"), k=K, lo=lo, hi=hi, bins=10,
                          model_fingerprint=lens.fingerprint)


def _record(lens, top, batches, first=0):
    for bi, b in enumerate(batches):
        idx = torch.arange(b.size) + (first + bi) * BS
        with lens.trace(b):
            top.record(lens, b, idx)


def _brute(lens, batches, units, lo, hi):
    """Every counted (value, clip, position) per unit from plain torch hooks, sorted by (-value, clip, position)."""
    rows = {u: [] for u in range(len(units))}
    hist = np.zeros((4, len(units), 10))
    emo = {"angry": 0, "happy": 1, "neutral": 2, "sad": 3}
    for bi, b in enumerate(batches):
        seen = {}
        hooks = [lens.adapter.site_module(int(l), "act").register_forward_hook(
            lambda m, i, o, l=int(l): seen.setdefault(l, o.detach().clone())) for l in set(units[:, 0].tolist())]
        with torch.no_grad():
            lens.model(**b.inputs)
        for h in hooks:
            h.remove()
        valid, pad = b.masks.valid, b.masks.padding
        for r in range(b.size):
            keep = (~pad[r]).nonzero().flatten().tolist()
            for ui, (l, n) in enumerate(units.tolist()):
                for j, p in enumerate(keep):
                    if valid[r, p]:
                        v = float(seen[l][r, p, n])
                        rows[ui].append((v, bi * BS + r, j))
                        x = (np.float32(v) - np.float32(lo[ui])) / (np.float32(hi[ui]) - np.float32(lo[ui])) * 10
                        hist[emo[b.labels[r]], ui, int(np.clip(np.floor(x), 0, 9))] += 1
    return {u: sorted(r, key=lambda t: (-t[0], t[1], t[2]))[:K] for u, r in rows.items()}, hist


def test_running_topk_equals_brute_force_for_every_unit_of_a_set(demo):
    lens, clips, prompts, batches, units, lo, hi = demo
    assert len(units) >= 40
    top = _new(lens, units, lo, hi)
    _record(lens, top, batches)
    want, hist = _brute(lens, batches, units, lo, hi)
    for ui, (l, n) in enumerate(units.tolist()):
        got = [(e["value"], e["clip"], e["position"]) for e in top.entries(l, n)]
        assert got == want[ui], f"unit {l}:{n}"
    np.testing.assert_array_equal(top.hist.numpy(), hist)
    # the profile of each top clip is that clip's row of values, read at the top position
    ui = 0
    l, n = units[0].tolist()
    for slot, e in enumerate(top.entries(l, n)):
        assert float(top.profiles[ui, slot, e["position"]]) == e["value"]


def test_shards_merged_in_any_order_and_resume_equal_one_pass(demo):
    lens, clips, prompts, batches, units, lo, hi = demo
    one = _new(lens, units, lo, hi)
    _record(lens, one, batches)
    a, b = _new(lens, units, lo, hi), _new(lens, units, lo, hi)
    _record(lens, a, batches[:2], first=0)
    _record(lens, b, batches[2:], first=2)
    for merged in (_new(lens, units, lo, hi).merge(b).merge(a), a.merge(b)):
        for n in ("values", "clips", "positions", "hist"):
            assert torch.equal(getattr(merged, n), getattr(one, n)), n
        w = one.profiles.shape[2]
        assert torch.equal(merged.profiles[..., :w].nan_to_num(-9), one.profiles.nan_to_num(-9))
    # the plain-forward path the run and lens.top_activations use (hooks without a tracer) gives the same state
    via = collect_top(lens, clips, prompts, _new(lens, units, lo, hi), batch_size=BS, num_workers=0)
    for n in ("values", "clips", "positions", "hist"):
        assert torch.equal(getattr(via, n), getattr(one, n)), n
    half = _new(lens, units, lo, hi)
    _record(lens, half, batches[:1])
    resumed = TopActivations.from_state_dict(half.state_dict())
    _record(lens, resumed, batches[1:], first=1)
    for n in ("values", "clips", "positions", "hist"):
        assert torch.equal(getattr(resumed, n), getattr(one, n)), n


def test_ties_rank_by_clip_then_position_and_padding_is_skipped():
    top = TopActivations(["0:0", "0:1"], ("a", "b"), k=4, lo=0.0, hi=4.0, bins=4)
    acts = torch.tensor([[[9.0, 1.0], [2.0, 2.0], [2.0, 3.0]],      # row 0: left-padded (pos 0 is padding)
                         [[2.0, 3.0], [2.0, 3.0], [1.0, 0.5]]])
    pad = torch.tensor([[True, False, False], [False, False, False]])
    counted = ~pad
    top.add_layer(0, acts, counted, pad, torch.tensor([7, 3]), torch.tensor([0, 1]))
    # unit 0:0: value 2 four times -> clip 3 (pos 0, 1) before clip 7 (pos 0, 1); the 9.0 is padding
    assert top.entries(0, 0) == [{"value": 2.0, "clip": 3, "position": 0}, {"value": 2.0, "clip": 3, "position": 1},
                                 {"value": 2.0, "clip": 7, "position": 0}, {"value": 2.0, "clip": 7, "position": 1}]
    assert [(e["clip"], e["position"]) for e in top.entries(0, 1)] == [(3, 0), (3, 1), (7, 1), (7, 0)]
    assert top.hist[:, 0].tolist() == [[0, 0, 2, 0], [0, 1, 2, 0]]
    few = TopActivations(["0:0"], ("a",), k=3)
    few.add_layer(0, torch.ones(1, 2, 1), torch.tensor([[True, False]]), torch.zeros(1, 2, dtype=torch.bool),
                  torch.tensor([0]), torch.tensor([0]))
    assert len(few.entries(0, 0)) == 1 and int(few.clips[0, 1]) == EMPTY


def test_bad_input_is_refused():
    with pytest.raises(InputError, match="LAYER:NEURON"):
        parse_units(["3-4"])
    with pytest.raises(InputError, match="hi > lo"):
        TopActivations(["0:0"], ("a",), lo=1.0, hi=1.0)
    a, b = TopActivations(["0:0"], ("a",), k=2), TopActivations(["0:1"], ("a",), k=2)
    with pytest.raises(IncompatibleError, match="units"):
        a.merge(b)
    with pytest.raises(InputError, match="not among"):
        a.entries(5, 5)
