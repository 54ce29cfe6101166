"""Selectors and the budget: the batched kernels against plain-Python loop references.

The references below recompute every score one unit at a time with ``math`` and pick each budget by
sorting ``(-score, flat index)`` tuples. Exact set equality needs the two implementations to agree to
the last bit wherever scores tie, so the exact-set tests use *dyadic* stats (T a power of two, integer
K, sums and squares): then P = K/T and its sums are exact, and every other step is one correctly
rounded IEEE operation done in the same order (log and sqrt aside, which still map equal inputs to
equal outputs, so tie groups agree; LAPE's entropy terms are rounded to a 2**-40 grid, so its sums are
exact in any order). Non-dyadic stats are checked for close scores and for
exact selection on the kernel's own scores.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from esn_lens.errors import InputError
from esn_lens.neurons import NeuronSet
from esn_lens.selectors import DEFAULT_TOP_FRAC, SELECTORS, find_neurons, score, select, top_k_mask
from esn_lens.stats import NeuronStats

EMOS = ("neutral", "angry", "happy", "sad", "frustrated")
BUILTINS = ("lap", "lape", "mad", "conact", "random", "mean_diff", "cohens_d")
NEG_INF = -math.inf


# ---------------------------------------------------------------------- fixtures
def make_stats(seed: int, E: int = 4, L: int = 3, N: int = 16, *, dyadic: bool = True, kmax: int = 3) -> NeuronStats:
    """Random stats; dyadic ones have T in {16, 32, 64}, small integer K (many ties) and integer sums."""
    g = torch.Generator().manual_seed(seed)
    s = NeuronStats(EMOS[:E], n_layers=L, d_mlp=N, model_fingerprint=f"fp-{seed}")
    if dyadic:
        T = (2 ** torch.randint(4, 7, (E,), generator=g)).to(torch.float64)
        S = torch.randint(-4, 5, (E, L, N), generator=g).to(torch.float64)
        Q = S * S + torch.randint(0, 6, (E, L, N), generator=g).to(torch.float64)
    else:
        T = torch.randint(20, 100, (E,), generator=g).to(torch.float64)
        S = torch.randn(E, L, N, generator=g, dtype=torch.float64) * T[:, None, None] * 0.3
        Q = (torch.randn(E, L, N, generator=g, dtype=torch.float64) ** 2 + 0.1) * T[:, None, None]
    K = torch.randint(0, kmax + 1, (E, L, N), generator=g).to(torch.float64)
    s.T, s.K, s.sum, s.sumsq = T, torch.minimum(K, T[:, None, None]), S, Q
    return s


# ---------------------------------------------------------------------- loop references
def ref_scores(stats: NeuronStats, name: str, seed: int = 0, **opts) -> list:
    """scores[e][l][n] of a built-in selector, one unit at a time."""
    E, L, N = stats.shape
    K, T, S, Q = stats.K.tolist(), stats.T.reshape(-1).tolist(), stats.sum.tolist(), stats.sumsq.tolist()
    if name == "random":  # the definition: one seeded torch.Generator draw of uniform [0, 1) float64
        return torch.rand((E, L, N), generator=torch.Generator().manual_seed(seed), dtype=torch.float64).tolist()
    out = [[[0.0] * N for _ in range(L)] for _ in range(E)]
    thr = None
    if name == "lape" and opts.get("filter_percentile") is not None:
        allP = [K[e][l][n] / T[e] for e in range(E) for l in range(L) for n in range(N)]
        thr = float(np.percentile(np.array(allP), opts["filter_percentile"]))
    Ttot = 0.0
    for e in range(E):
        Ttot += T[e]
    for l in range(L):
        for n in range(N):
            P = [K[e][l][n] / T[e] for e in range(E)]
            top = 0
            for e in range(1, E):
                if P[e] > P[top]:
                    top = e
            for e in range(E):
                if name == "lap":
                    v = P[e]
                elif name == "mad":
                    v = abs(P[e] - sum(P) / E)
                elif name == "conact":
                    srt = sorted(P, reverse=True) + [0.0]
                    others = opts.get("others", NEG_INF)
                    v = srt[0] - srt[1] if e == top and srt[0] - srt[1] > 0 else others
                elif name == "lape":
                    tot = sum(P)
                    ok = tot > 0 and e == top and (thr is None or max(P) > thr)
                    if ok:
                        terms = [x / tot * math.log(x / tot) if x > 0 else 0.0 for x in P]
                        v = sum(round(t * 2**40) / 2**40 for t in terms) + 0.0  # on the kernel's 2**-40 grid
                    else:
                        v = NEG_INF
                else:
                    Stot, Qtot = sum(S[f][l][n] for f in range(E)), sum(Q[f][l][n] for f in range(E))
                    Tr = Ttot - T[e]
                    Sr, Qr = Stot - S[e][l][n], Qtot - Q[e][l][n]
                    diff = S[e][l][n] / T[e] - Sr / max(Tr, 1.0)
                    if name == "mean_diff":
                        v = diff
                    else:
                        m2 = max(Q[e][l][n] - S[e][l][n] * S[e][l][n] / T[e], 0.0)
                        m2 = m2 + max(Qr - Sr * Sr / max(Tr, 1.0), 0.0)
                        v = diff / math.sqrt(m2 / max(T[e] + Tr - 2, 1.0) + opts.get("eps", 1e-12))
                out[e][l][n] = v
    return out


def ref_select(scores: list, *, top_frac: float | None = None, count: int | None = None, per: str = "global") -> list[set]:
    """Per emotion, the chosen {(layer, neuron)}: sort by (-score, flat index), keep the first k finite."""
    E, L, N = len(scores), len(scores[0]), len(scores[0][0])
    units = L * N if per == "global" else N
    k = count if count is not None else math.floor(top_frac * units + 0.5)
    chosen = []
    for e in range(E):
        units_e = [(scores[e][l][n], l * N + n, (l, n)) for l in range(L) for n in range(N)]
        groups = [units_e] if per == "global" else [units_e[l * N:(l + 1) * N] for l in range(L)]
        picked: set = set()
        for group in groups:
            ranked = sorted(group, key=lambda t: (-t[0], t[1]))
            picked |= {u for v, _, u in ranked[:k] if v != NEG_INF}
        chosen.append(picked)
    return chosen


def sets_of(ns: NeuronSet) -> list[set]:
    return [{tuple(x) for x in ns.indices(e).tolist()} for e in ns.emotions]


# ---------------------------------------------------------------------- kernels == loop reference
@pytest.mark.parametrize("name", BUILTINS)
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("dyadic", [True, False])
def test_scores_match_loop_reference(name, seed, dyadic):
    stats = make_stats(seed, dyadic=dyadic)
    got = score(stats, name, seed=seed)
    want = torch.tensor(ref_scores(stats, name, seed=seed), dtype=torch.float64)
    assert got.dtype == torch.float64 and got.shape == stats.shape
    assert torch.equal(torch.isneginf(got), torch.isneginf(want))
    assert not torch.isnan(got).any()
    fin = torch.isfinite(want)
    torch.testing.assert_close(got[fin], want[fin], rtol=1e-12, atol=1e-14)
    if dyadic and name not in ("lape", "cohens_d"):
        # bit-identical: the same correctly rounded operations in the same order. (torch's log and sqrt
        # may differ from math's by an ulp, so LAPE and Cohen's d are only equal up to rounding; they
        # still give equal inputs equal outputs, which is what exact ties need.)
        assert torch.equal(got, want)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_conact_literal_others_match_loop_reference(seed):
    """``others=0.0`` (the paper's literal ConAct) against the loop reference, scores and a full budget."""
    stats = make_stats(seed, dyadic=True)
    got = score(stats, "conact", others=0.0)
    want = torch.tensor(ref_scores(stats, "conact", others=0.0), dtype=torch.float64)
    assert torch.equal(got, want) and not torch.isinf(got).any()
    budget = stats.shape[1] * stats.shape[2] // 2
    assert sets_of(find_neurons(stats, "conact", count=budget, others=0.0)) == ref_select(want.tolist(), count=budget)
    strict = find_neurons(stats, "conact", count=budget)  # zero-evidence units are never taken by default
    assert strict.counts == {e: min(budget, int((got[i] > 0).sum())) for i, e in enumerate(stats.emotions)}


@pytest.mark.parametrize("name", BUILTINS)
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("per", ["global", "layer"])
@pytest.mark.parametrize("budget", [dict(top_frac=0.05), dict(top_frac=0.3), dict(top_frac=0.5), dict(count=7), dict(top_frac=1.0)])
def test_sets_equal_loop_reference(name, seed, per, budget):
    stats = make_stats(seed, E=3 + seed % 3, dyadic=True, kmax=2 + seed % 3)
    ns = find_neurons(stats, name, per=per, seed=seed, **budget)
    assert sets_of(ns) == ref_select(ref_scores(stats, name, seed=seed), per=per, **budget)
    assert ns.emotions == stats.emotions and ns.selector == name
    assert ns.site == stats.site and ns.model_fingerprint == stats.model_fingerprint


@pytest.mark.parametrize("name", BUILTINS)
@pytest.mark.parametrize("seed", [5, 6])
def test_selection_on_kernel_scores_non_dyadic(name, seed):
    """Non-dyadic stats: the budget applied to the kernel's scores equals the loop's budget on them."""
    stats = make_stats(seed, E=5, L=4, N=24, dyadic=False, kmax=6)
    ns = find_neurons(stats, name, top_frac=0.1, seed=seed)
    assert sets_of(ns) == ref_select(score(stats, name, seed=seed).tolist(), top_frac=0.1)


@pytest.mark.parametrize("q", [50, 80, 95])
@pytest.mark.parametrize("seed", [0, 1])
def test_lape_filter_percentile_matches_reference(q, seed):
    stats = make_stats(seed, E=4, L=3, N=20, kmax=9)
    got = score(stats, "lape", filter_percentile=q)
    want = torch.tensor(ref_scores(stats, "lape", filter_percentile=q), dtype=torch.float64)
    assert torch.equal(torch.isneginf(got), torch.isneginf(want))
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
    ns = find_neurons(stats, "lape", top_frac=0.2, filter_percentile=q)
    assert sets_of(ns) == ref_select(want.tolist(), top_frac=0.2)
    assert ns.meta["options"] == {"filter_percentile": q}
    # the filter only removes units
    unfiltered = torch.isfinite(score(stats, "lape"))
    assert bool((torch.isfinite(got) <= unfiltered).all())
    if q == 95:
        assert 0 < torch.isfinite(got).sum() < unfiltered.sum()


@settings(max_examples=150, deadline=None)
@given(
    data=st.lists(st.sampled_from([NEG_INF, -1.0, 0.0, 0.5, 1.0, 2.0, math.inf]), min_size=2 * 3 * 5, max_size=2 * 3 * 5),
    k=st.integers(0, 15),
    per=st.sampled_from(["global", "layer"]),
)
def test_budget_and_tie_breaking_property(data, k, per):
    """Heavy ties, infinities: the topk+tie kernel keeps exactly what a stable sort keeps."""
    scores = torch.tensor(data, dtype=torch.float64).reshape(2, 3, 5)
    if per == "layer":
        k = min(k, 5)
    ns = select(scores, emotions=("a", "b"), count=k, per=per)
    assert sets_of(ns) == ref_select(scores.tolist(), count=k, per=per)


def test_top_k_mask_ties_go_to_lower_index():
    s = torch.tensor([[1.0, 2.0, 2.0, 2.0, 0.0], [3.0, 3.0, 3.0, 3.0, 3.0]], dtype=torch.float64)
    assert top_k_mask(s, 2).tolist() == [[False, True, True, False, False], [True, True, False, False, False]]
    assert top_k_mask(s, 0).sum() == 0 and top_k_mask(s, 5).all()


# ---------------------------------------------------------------------- constructed cases
def angry_only_stats() -> NeuronStats:
    """Every unit fires at rate 10/64 for every emotion except unit (1, 5), which fires only for angry."""
    s = NeuronStats(("neutral", "angry", "happy", "sad"), n_layers=3, d_mlp=8, model_fingerprint="fp-angry")
    s.T = torch.full((4,), 64.0, dtype=torch.float64)
    s.K = torch.full((4, 3, 8), 10.0, dtype=torch.float64)
    s.K[:, 1, 5] = torch.tensor([0.0, 40.0, 0.0, 0.0], dtype=torch.float64)
    s.K[:, 2, 2] = torch.tensor([12.0, 12.0, 20.0, 12.0], dtype=torch.float64)  # mildly happy
    s.sum = s.K.clone()
    s.sumsq = s.K * 2
    return s


@pytest.mark.parametrize("name", ["mad", "conact", "lap", "lape", "mean_diff", "cohens_d"])
def test_angry_only_neuron_is_chosen_first_for_angry(name):
    ns = find_neurons(angry_only_stats(), name, count=1)
    assert ns.indices("angry").tolist() == [[1, 5]]
    if name in ("conact", "lape", "lap", "mean_diff", "cohens_d"):
        assert ns.indices("happy").tolist() == [[2, 2]]


def test_known_values_on_constructed_case():
    s = angry_only_stats()
    mad = score(s, "mad")
    assert mad[1, 1, 5].item() == pytest.approx(30 / 64)  # |40/64 - 10/64|
    assert mad[0, 1, 5].item() == pytest.approx(10 / 64)  # MAD also flags the angry unit for the others
    assert mad[:, 0, 0].tolist() == [0.0] * 4
    con = score(s, "conact")
    assert con[:, 1, 5].tolist() == [NEG_INF, 40 / 64, NEG_INF, NEG_INF]
    assert con[:, 2, 2].tolist() == [NEG_INF, NEG_INF, 8 / 64, NEG_INF]
    assert bool(torch.isneginf(con[:, 0, 0]).all())  # flat profile: no contrast, never an ESN
    # no unit prefers sad: its ConAct set stays empty instead of taking a zero-evidence unit
    assert find_neurons(s, "conact", count=1).counts["sad"] == 0
    literal = score(s, "conact", others=0.0)  # the paper's "0 for the others"
    assert literal[:, 1, 5].tolist() == [0.0, 40 / 64, 0.0, 0.0] and bool((literal[:, 0, 0] == 0).all())
    # ... which tops the budget up with the lowest-index unit
    assert find_neurons(s, "conact", count=1, others=0.0).indices("sad").tolist() == [[0, 0]]
    lape = score(s, "lape")
    assert lape[:, 1, 5].tolist() == [NEG_INF, 0.0, NEG_INF, NEG_INF]  # one-hot profile: H = 0
    assert lape[0, 0, 0].item() == pytest.approx(-math.log(4))  # flat profile, argmax = first emotion on ties
    assert torch.isneginf(lape[1:, 0, 0]).all()


def test_lape_assigns_each_unit_to_its_argmax_and_may_underfill():
    s = make_stats(3, E=4, L=3, N=16, kmax=5)
    sc = score(s, "lape")
    P = s.firing_rate
    finite = torch.isfinite(sc)
    assert bool((finite.sum(0) <= 1).all())  # at most one emotion per unit
    fired = P.sum(0) > 0
    assert torch.equal(finite.any(0), fired)
    assert torch.equal(sc.argmax(0)[fired], P.argmax(0)[fired])
    ns = find_neurons(s, "lape", top_frac=1.0)
    assert torch.equal(ns.masks, finite)  # r = 1: every finite-scored unit, so budgets differ
    assert sum(ns.counts.values()) == int(fired.sum())
    assert ns.meta["budget"] == 48


def test_never_firing_units_are_never_chosen_by_lape():
    s = make_stats(0)
    s.K[:, 0, :] = 0
    ns = find_neurons(s, "lape", top_frac=1.0)
    assert ns.layer_counts()[:, 0].tolist() == [0] * 4


def test_random_is_seeded_uniform_with_the_same_budget():
    s = make_stats(1, E=4, L=3, N=50)
    a, b, c = score(s, "random", seed=7), score(s, "random", seed=7), score(s, "random", seed=8)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert 0.0 <= a.min().item() and a.max().item() < 1.0
    assert abs(a.mean().item() - 0.5) < 0.05
    ns = find_neurons(s, "random", top_frac=0.1, seed=7)
    assert set(ns.counts.values()) == {15} and ns.meta["seed"] == 7
    assert find_neurons(s, "random", top_frac=0.1, seed=7) == ns
    assert find_neurons(s, "random", top_frac=0.1, seed=8) != ns


def test_magnitude_selectors_zero_variance_no_nan():
    s = NeuronStats(("a", "b"), n_layers=1, d_mlp=3)
    s.T = torch.tensor([4.0, 4.0], dtype=torch.float64)
    s.K = torch.zeros(2, 1, 3, dtype=torch.float64)
    # unit 0: constant 0 everywhere; unit 1: constant 1 for a, 0 for b (zero variance, nonzero difference)
    s.sum = torch.tensor([[[0.0, 4.0, 8.0]], [[0.0, 0.0, 4.0]]], dtype=torch.float64)
    s.sumsq = torch.tensor([[[0.0, 4.0, 20.0]], [[0.0, 0.0, 8.0]]], dtype=torch.float64)
    d = score(s, "cohens_d")
    assert torch.isfinite(d).all()
    assert d[:, 0, 0].tolist() == [0.0, 0.0]
    assert d[0, 0, 1].item() == pytest.approx(1.0 / math.sqrt(1e-12))
    assert d[0, 0, 1].item() == -d[1, 0, 1].item()
    # unit 2: a ~ mean 2 (var 4/3), b ~ mean 1 (var 4/3): d = 1 / sqrt(4/3)
    assert d[0, 0, 2].item() == pytest.approx(1 / math.sqrt(4 / 3))
    assert score(s, "cohens_d", eps=1e-6)[0, 0, 1].item() == pytest.approx(1e3)
    md = score(s, "mean_diff")
    assert md[:, 0, :].tolist() == [[0.0, 1.0, 1.0], [0.0, -1.0, -1.0]]


def test_single_emotion_is_nan_free():
    s = make_stats(0, E=1)
    for name in BUILTINS:
        assert not torch.isnan(score(s, name)).any(), name


# ---------------------------------------------------------------------- budget semantics and errors
def test_budget_rounding_and_edges():
    s = make_stats(0, E=3, L=3, N=16)  # 48 units
    assert find_neurons(s, "lap", top_frac=0.1).meta["budget"] == 5  # 4.8 -> 5
    assert find_neurons(s, "lap").meta["budget"] == round(DEFAULT_TOP_FRAC * 48)
    assert find_neurons(s, "mad", top_frac=0.0).counts == {e: 0 for e in s.emotions}
    full = find_neurons(s, "mad", top_frac=1.0)
    assert full.masks.all() and full.top_frac == 1.0
    assert find_neurons(s, "mad", top_frac=1).top_frac == 1.0
    layer = find_neurons(s, "mad", top_frac=0.25, per="layer")
    assert layer.layer_counts().tolist() == [[4, 4, 4]] * 3
    counted = find_neurons(s, "mad", count=6)
    assert counted.top_frac is None and set(counted.counts.values()) == {6}


@pytest.mark.parametrize("bad", [-0.1, 1.5, 2, float("nan"), True])
def test_top_frac_out_of_range(bad):
    with pytest.raises(InputError, match=r"top_frac must be a fraction in \[0, 1\]"):
        find_neurons(make_stats(0), "mad", top_frac=bad)


def test_bad_count_and_per():
    s = make_stats(0)
    with pytest.raises(InputError, match=r"count must be an integer in \[0, 48\]"):
        find_neurons(s, "mad", count=49)
    with pytest.raises(InputError, match=r"count must be an integer in \[0, 16\]"):
        find_neurons(s, "mad", count=17, per="layer")
    with pytest.raises(InputError, match="per must be one of"):
        find_neurons(s, "mad", per="neuron")


def test_unknown_selector_lists_registered():
    with pytest.raises(KeyError) as err:
        find_neurons(make_stats(0), "mda")
    msg = str(err.value)
    assert "'mda'" in msg and all(name in msg for name in BUILTINS)


def test_unknown_option_names_selector():
    with pytest.raises(InputError, match=r"selector 'mad' got unknown option\(s\) \['filter_percentile'\]"):
        score(make_stats(0), "mad", filter_percentile=95)
    with pytest.raises(InputError, match=r"filter_percentile must be in \[0, 100\]"):
        score(make_stats(0), "lape", filter_percentile=120)


def test_empty_emotion_refused():
    s = make_stats(0)
    s.T[2] = 0
    with pytest.raises(InputError, match="no counted tokens"):
        find_neurons(s, "mad")


# ---------------------------------------------------------------------- user selectors
@pytest.fixture
def registered():
    names = []

    def reg(name, fn):
        SELECTORS.register(name, fn, overwrite=True)
        names.append(name)

    yield reg
    for n in names:
        if n in SELECTORS:
            SELECTORS.unregister(n)


def test_user_selector_through_find_neurons(registered):
    def neg_rate(stats, *, seed=0, scale=1.0):
        """Prefers the units that fire least."""
        return -scale * stats.firing_rate

    registered("test_neg_rate", neg_rate)
    s = make_stats(2)
    ns = find_neurons(s, "test_neg_rate", top_frac=0.25, scale=2.0)
    assert ns.selector == "test_neg_rate" and ns.meta["options"] == {"scale": 2.0}
    assert sets_of(ns) == ref_select((-2.0 * s.firing_rate).tolist(), top_frac=0.25)
    assert "test_neg_rate" in SELECTORS.names()
    # a selector function may also be passed directly, without registering
    direct = find_neurons(s, neg_rate, top_frac=0.25)
    assert direct.selector == "neg_rate" and torch.equal(direct.masks, ns.masks)


def test_user_selector_wrong_shape_nan_dtype(registered):
    registered("test_bad_shape", lambda stats, **kw: stats.firing_rate[:, :, :-1])
    registered("test_nan", lambda stats, **kw: stats.firing_rate * float("nan"))
    registered("test_int", lambda stats, **kw: stats.K.long())
    registered("test_list", lambda stats, **kw: stats.K.tolist())
    s = make_stats(0)
    with pytest.raises(InputError, match=r"selector 'test_bad_shape' returned scores of shape \(4, 3, 15\), expected .* \(4, 3, 16\)"):
        find_neurons(s, "test_bad_shape")
    with pytest.raises(InputError, match=r"selector 'test_nan' returned 192 NaN score\(s\), first at .* \(0, 0, 0\)"):
        find_neurons(s, "test_nan")
    with pytest.raises(InputError, match=r"selector 'test_int' returned dtype torch.int64"):
        score(s, "test_int")
    with pytest.raises(InputError, match=r"selector 'test_list' returned list"):
        score(s, "test_list")


def test_user_selector_float32_and_no_seed(registered):
    registered("test_f32", lambda stats: stats.firing_rate.float())
    out = score(make_stats(0), "test_f32", seed=3)
    assert out.dtype == torch.float64


# ---------------------------------------------------------------------- select() on tensors
def test_select_from_score_tensor_and_subsets():
    s = make_stats(1)
    sc = score(s, "conact")
    ns = select(sc, emotions=s.emotions, selector="conact", top_frac=0.1, site="post", model_fingerprint="m1",
                meta={"dataset": "iemocap"})
    assert ns.site == "post" and ns.model_fingerprint == "m1" and ns.selector == "conact"
    assert ns.meta["dataset"] == "iemocap" and ns.meta["per"] == "global"
    assert torch.equal(ns.masks, find_neurons(s, "conact", top_frac=0.1).masks)
    sub = find_neurons(s, "conact", top_frac=0.1, emotions=("sad", "angry"))
    assert sub.emotions == ("sad", "angry")
    assert torch.equal(sub["sad"], ns["sad"]) and torch.equal(sub["angry"], ns["angry"])
    with pytest.raises(InputError, match="pass emotions"):
        select(sc, top_frac=0.1)
    with pytest.raises(InputError, match="unknown emotion"):
        find_neurons(s, "mad", emotions=("calm",))
    with pytest.raises(InputError, match="only apply when scoring NeuronStats"):
        select(sc, emotions=s.emotions, filter_percentile=95)
    with pytest.raises(InputError, match="NaN"):
        select(torch.full((1, 2, 3), float("nan"), dtype=torch.float64), emotions=("a",))


# ---------------------------------------------------------------------- a tiny real model
TINY_PROMPTS = ["I am so angry right now!", "What a lovely sunny day.", "Nobody came to the party.",
                "Stop shouting at me.", "We won the cup!", "I miss her every day."]


@pytest.mark.parametrize("family, site", [("qwen2", "act"), ("qwen2", "pre"), ("llama", "post")])
def test_selectors_on_stats_recorded_from_a_tiny_real_model(tiny, family, site, tmp_path):
    """Stats recorded by the Lens from a tiny real transformers model: kernels == loop reference."""
    from esn_lens.lens import Lens

    model, tok = tiny(family)
    lens = Lens(model, tok)
    stats = lens.new_stats(("angry", "happy", "sad"), site=site)
    lens.run(lens.batch(None, TINY_PROMPTS), stats=stats, emotion_index=torch.tensor([0, 1, 2, 0, 1, 2]), logits="none")
    assert stats.T.min() > 0 and 0 < stats.K.sum() < stats.T.sum() * lens.n_layers * lens.d_mlp
    for name in BUILTINS:
        ref = ref_scores(stats, name)
        torch.testing.assert_close(score(stats, name), torch.tensor(ref, dtype=torch.float64), rtol=1e-12, atol=1e-14)
        for per, r in (("global", 0.05), ("layer", 0.1)):
            ns = find_neurons(stats, name, top_frac=r, per=per)
            assert sets_of(ns) == ref_select(ref, top_frac=r, per=per), (name, per)
            assert ns.model_fingerprint == lens.fingerprint and ns.site == site
    ns = find_neurons(stats, "conact", top_frac=0.05)
    ns.save(tmp_path / "tiny.safetensors")
    assert NeuronSet.load(tmp_path / "tiny.safetensors", expect_fingerprint=lens.fingerprint, expect_site=site) == ns
