"""Selectors recover planted emotion units of a tiny real model (stats recorded through the Lens)."""
import pytest
import torch

from esn_lens import find_neurons
from esn_lens.evaluate import SEREvaluator
from esn_lens.lens import Lens
from esn_lens.testing.planted import build_planted, planted_clips

EM = ("angry", "happy", "neutral", "sad")
K = 4  # planted units per emotion


@pytest.fixture(scope="module")
def recorded():
    model, tok, planted = build_planted(EM, units_per_emotion=K, seed=1)
    lens = Lens(model, tok)
    clips = planted_clips(6, EM, seed=2)
    ev = SEREvaluator(lens, EM, answer="word")
    stats = lens.new_stats(EM)
    for i in range(0, len(clips), 8):  # each clip with its own shuffled-option prompt
        chunk = clips[i:i + 8]
        b = lens.batch_clips(chunk, [ev.prompt(c).text for c in chunk])
        lens.run(b, stats=stats, emotion_index=stats.emotion_index(b.labels), logits="none")
    return lens, planted, stats


def precision_recall(ns, planted, emotion):
    chosen = {tuple(x) for x in ns.indices(emotion).tolist()}
    truth = set(planted[emotion])
    hit = len(chosen & truth)
    return hit / max(len(chosen), 1), hit / len(truth)


@pytest.mark.parametrize("selector", ["mad", "conact"])
def test_mad_and_conact_recover_planted_units(recorded, selector):
    lens, planted, stats = recorded
    ns = find_neurons(stats, selector, count=K)
    for e in EM:
        p, r = precision_recall(ns, planted, e)
        assert p >= 0.9 and r >= 0.9, (selector, e, p, r)


def test_random_does_not_recover_planted_units(recorded):
    lens, planted, stats = recorded
    for seed in range(3):
        ns = find_neurons(stats, "random", count=K, seed=seed)
        recalls = [precision_recall(ns, planted, e)[1] for e in EM]
        assert sum(recalls) / len(EM) < 0.5


def test_budget_by_fraction_matches_count(recorded):
    lens, planted, stats = recorded
    frac = K / (lens.n_layers * lens.d_mlp)
    a, b = find_neurons(stats, "conact", top_frac=frac), find_neurons(stats, "conact", count=K)
    assert torch.equal(a.masks, b.masks)
    assert a.layer_counts()[:, 1].tolist() == [K] * 4 and a.layer_counts()[:, 0].tolist() == [0] * 4
