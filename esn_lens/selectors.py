"""Selectors: score every (emotion, layer, neuron) unit from :class:`~esn_lens.stats.NeuronStats`, then
take a per-emotion budget of the best units as a :class:`~esn_lens.neurons.NeuronSet`.

A selector is a pure function ``fn(stats, *, seed=0, **options) -> Float64[Tensor, "emotion layer neuron"]``
of scores: higher = more selective for that emotion; ``-inf`` = never choose this unit for this emotion.
Built-ins register themselves through the public decorator, exactly as a user's selector does::

    @SELECTORS.register("my_selector")
    def my_selector(stats, *, seed=0):
        return stats.firing_rate - stats.firing_rate.mean(0)

    ns = find_neurons(stats, "my_selector", top_frac=0.005)

Every built-in is a handful of whole-tensor torch/einops reductions over (E, L, N); nothing loops over
layers, neurons or emotions. Sums over emotions run in emotion order (see ``_sum_emotions``) so that
units with identical profiles get bit-identical scores and ties are broken by index, deterministically.

Notation: P_e(n) = K_e(n) / T_e (``stats.firing_rate``), E emotions.
"""
from __future__ import annotations

import inspect
import math
from typing import Any, Callable, Sequence

import einops
import torch
from jaxtyping import Bool, Float, Float64
from torch import Tensor

from .errors import InputError
from .neurons import NeuronSet, _jsonable
from .registry import Registry
from .attribution import AttributionStats
from .stats import NeuronStats

#: The selector registry; ``SELECTORS.names()`` lists what is available.
SELECTORS: Registry = Registry("selector")
#: Default budget r: the top 0.5% of all L x N units per emotion (the follow-up work's value).
DEFAULT_TOP_FRAC = 0.005
PER_CHOICES = ("global", "layer")
_NEG_INF = float("-inf")
_ENTROPY_GRID = 2.0**40


# ---------------------------------------------------------------------- helpers
def _percentile(x: Float64[Tensor, "..."], q: float) -> float:
    """The q-th percentile of all values of ``x`` with linear interpolation (numpy's default method)."""
    flat = x.reshape(-1)
    n = flat.numel()
    pos = q / 100.0 * (n - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, n - 1)
    v_lo = float(torch.kthvalue(flat, lo + 1).values)
    v_hi = float(torch.kthvalue(flat, hi + 1).values) if hi != lo else v_lo
    return v_lo + (v_hi - v_lo) * (pos - lo)


def _sum_emotions(x: Float64[Tensor, "emotion *rest"]) -> Float64[Tensor, "1 *rest"]:
    """Sum over the emotion axis in emotion order, ``((x0 + x1) + x2) + ...``, as the last row of a cumsum.

    Unlike ``x.sum(0)``, whose vectorised reduction may add in another order for some columns (tails),
    this gives every unit the same rounding, so units with identical profiles tie exactly and the
    deterministic index tie-break applies (and a plain sequential reference reproduces it bit for bit).
    """
    return x.cumsum(dim=0)[-1:]


def _top_emotion(P: Float64[Tensor, "emotion layer neuron"]) -> Bool[Tensor, "emotion layer neuron"]:
    """One-hot (over emotions) of each unit's argmax emotion; ties go to the first emotion."""
    is_max = P == P.amax(dim=0, keepdim=True)
    return is_max & (is_max.cumsum(dim=0) == 1)


def _rest(x: Float64[Tensor, "emotion *rest"]) -> Float64[Tensor, "emotion *rest"]:
    """For each emotion, the pooled total of all the *other* emotions: ``sum_e' x_e' - x_e``."""
    return _sum_emotions(x) - x


# ---------------------------------------------------------------------- built-in selectors
@SELECTORS.register("lap")
def lap(stats: NeuronStats, *, seed: int = 0) -> Float64[Tensor, "emotion layer neuron"]:
    """LAP: the firing rate itself, ``score_e(n) = P_e(n) = K_e(n) / T_e``."""
    return stats.firing_rate


@SELECTORS.register("lape")
def lape(
    stats: NeuronStats, *, seed: int = 0, filter_percentile: float | int | None = None
) -> Float64[Tensor, "emotion layer neuron"]:
    """LAPE: low entropy of the firing profile over emotions, assigned to the argmax emotion.

    ``p_e(n) = P_e(n) / sum_e' P_e'(n)``, ``H(n) = -sum_e p_e(n) log p_e(n)`` (0 log 0 = 0);
    ``score_e(n) = -H(n)`` if ``e = argmax_e' P_e'(n)`` (first on ties) else ``-inf``.
    Units that never fire (sum_e P = 0) score ``-inf`` for every emotion. With ``filter_percentile=q``
    (the original LAPE filter uses 95) a unit is eligible only if ``max_e P_e(n)`` is strictly above the
    q-th percentile of all P values. Because only one emotion per unit is finite, an emotion's budget may be
    under-filled. Each ``p log p`` term is rounded to a multiple of 2**-40 (an error < 1e-12) so that
    the sum is exact: units with permuted profiles tie exactly and the index tie-break applies.
    """
    P = stats.firing_rate
    tot = _sum_emotions(P)[0]
    eligible = tot > 0
    p = P / torch.where(eligible, tot, torch.ones_like(tot))
    # p log p on a 2**-40 grid: the sum is then exact in any order, so equal profiles in any emotion
    # order (and on any device) give bit-identical entropies; "+ 0.0" turns -0.0 into 0.0.
    terms = torch.xlogy(p, p).mul_(_ENTROPY_GRID).round_().div_(_ENTROPY_GRID)
    neg_h = einops.reduce(terms, "e l n -> l n", "sum") + 0.0  # -H
    if filter_percentile is not None:
        q = float(filter_percentile)
        if not 0.0 <= q <= 100.0:
            raise InputError(f"lape filter_percentile must be in [0, 100], got {filter_percentile}")
        eligible = eligible & (P.max(dim=0).values > _percentile(P, q))
    keep = _top_emotion(P) & eligible[None]
    return torch.where(keep, neg_h[None], _NEG_INF)


@SELECTORS.register("mad")
def mad(stats: NeuronStats, *, seed: int = 0) -> Float64[Tensor, "emotion layer neuron"]:
    """MAD: absolute deviation from the mean firing rate over emotions, ``|P_e(n) - (1/E) sum_e' P_e'(n)|``."""
    P = stats.firing_rate
    mean = _sum_emotions(P) / P.shape[0]
    return (P - mean).abs_()


@SELECTORS.register("conact")
def conact(stats: NeuronStats, *, seed: int = 0, others: float = _NEG_INF) -> Float64[Tensor, "emotion layer neuron"]:
    """ConAct: contrastive activation ``P_(1)(n) - P_(2)(n)`` (largest minus second-largest firing rate)
    for the unit's top emotion ``argmax_e P_e(n)`` (first on ties); ``others`` for the other emotions and
    for units without contrast (gap 0: ties, units that never fire). With a single emotion ``P_(2) = 0``.

    ``others=-inf`` (default) never selects a unit for an emotion it does not prefer, so an emotion with fewer
    contrastive units than the budget gets an under-filled set (as with LAPE; ``NeuronSet.counts`` shows it).
    ``others=0.0`` is the paper's literal "0 for the others": identical on any budget that positive gaps fill
    (any 7B model), but an under-supplied emotion is then topped up with zero-evidence units in index order.
    Example: ``find_neurons(stats, "conact", top_frac=0.005).counts``.
    """
    P = stats.firing_rate
    if P.shape[0] == 1:
        return torch.where(P > 0, P, float(others))
    is_top = _top_emotion(P)
    gap = P.amax(dim=0, keepdim=True) - P.masked_fill(is_top, _NEG_INF).amax(dim=0, keepdim=True)
    return torch.where(is_top & (gap > 0), gap, float(others))


@SELECTORS.register("random")
def random_scores(stats: NeuronStats, *, seed: int = 0) -> Float64[Tensor, "emotion layer neuron"]:
    """RND: i.i.d. uniform [0, 1) scores from ``torch.Generator().manual_seed(seed)`` (same budget as the others)."""
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.rand(stats.shape, generator=g, dtype=torch.float64).to(stats.K.device)


@SELECTORS.register("mean_diff")
def mean_diff(stats: NeuronStats, *, seed: int = 0) -> Float64[Tensor, "emotion layer neuron"]:
    """Mean difference (magnitude, one-vs-rest): ``mu_e(n) - mu_rest(n)`` with ``mu_e = sum_e / T_e`` and
    ``mu_rest = (sum_tot - sum_e) / (T_tot - T_e)``, the pooled mean of all other emotions' tokens
    (0 when there is no other token, e.g. one emotion). Signed: higher means more active for ``e``."""
    T = stats.unit_tokens()  # per unit for routed (MoE) stats: a unit's mean is over the tokens routed to it
    return stats.sum / T.clamp(min=1) - _rest(stats.sum) / _rest(T).clamp(min=1)


@SELECTORS.register("cohens_d")
def cohens_d(stats: NeuronStats, *, seed: int = 0, eps: float = 1e-12) -> Float64[Tensor, "emotion layer neuron"]:
    """Cohen's d (one-vs-rest): ``(mu_e - mu_rest) / sqrt(s2 + eps)`` with pooled variance
    ``s2 = (M2_e + M2_rest) / max(T_e + T_rest - 2, 1)``, ``M2 = max(sumsq - sum**2 / T, 0)`` (the sums of
    squared deviations; 0 when T = 0). ``eps`` keeps zero-variance units finite: never NaN."""
    T = stats.unit_tokens()
    S, Q = stats.sum, stats.sumsq
    T_r = _rest(T)
    T_rc = T_r.clamp(min=1)
    T_c = T.clamp(min=1)
    S_r = _rest(S)
    diff = S / T_c - S_r / T_rc
    m2 = (Q - S * S / T_c).clamp_(min=0)  # M2_e
    m2 += (_rest(Q) - S_r * S_r / T_rc).clamp_(min=0)  # + M2_rest
    m2 /= (T + T_r - 2).clamp(min=1)  # pooled variance s2
    return diff.div_(m2.add_(float(eps)).sqrt_())


# ---------------------------------------------------------------------- scoring
@SELECTORS.register("atp")
def atp(stats: NeuronStats | AttributionStats, *, seed: int = 0) -> Float64[Tensor, "emotion layer neuron"]:
    """AtP (attribution patching): the mean over each emotion's clips of ``sum_pos a * dM/da``, the unit's estimated
    support for the true emotion's option (M = its log-probability minus the mean of the other options'), so the
    top units are those whose deactivation is expected to cost that emotion the most.
    Needs :class:`~esn_lens.attribution.AttributionStats` from ``collect_attribution(lens, clips, emotions,
    evaluator=...)``.
    """
    if not isinstance(stats, AttributionStats):
        raise InputError("selector 'atp' scores attribution statistics, not firing statistics: collect them with "
                         "esn_lens.collect_attribution(lens, clips, emotions, evaluator=...)")
    return stats.mean.clone()


def _resolve(selector: str | Callable[..., Tensor]) -> tuple[str, Callable[..., Tensor]]:
    if callable(selector):
        return getattr(selector, "__name__", "custom"), selector
    return selector, SELECTORS.get(selector)  # KeyError listing the registered selectors


def _bind_options(name: str, fn: Callable[..., Tensor], seed: int, options: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments for ``fn``: ``seed`` if it takes one, and ``options``, refusing unknown options clearly."""
    params = list(inspect.signature(fn).parameters.values())
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    named = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    known = [p.name for p in params[1:] if p.kind in named]  # params[0] receives the stats
    unknown = [k for k in options if k not in known and not var_kw]
    if unknown:
        accepted = [k for k in known if k != "seed"]
        raise InputError(f"selector {name!r} got unknown option(s) {unknown}; it accepts: {accepted or 'no options'}")
    kwargs = dict(options)
    if var_kw or "seed" in known:
        kwargs["seed"] = seed
    return kwargs


def _check_scores(scores: Any, shape: tuple[int, ...] | None, name: str) -> Float64[Tensor, "emotion layer neuron"]:
    """Validate scores of ``name``: a real tensor of ``shape`` (E, L, N), no NaN; returned as float64."""
    if not isinstance(scores, Tensor):
        raise InputError(f"selector {name!r} returned {type(scores).__name__}, expected a float64 tensor (emotion, layer, neuron)")
    if shape is not None and tuple(scores.shape) != tuple(shape):
        raise InputError(f"selector {name!r} returned scores of shape {tuple(scores.shape)}, expected (emotion, layer, neuron) = {tuple(shape)}")
    if scores.ndim != 3:
        raise InputError(f"scores of {name!r} must have shape (emotion, layer, neuron), got {tuple(scores.shape)}")
    if not scores.is_floating_point():
        raise InputError(f"selector {name!r} returned dtype {scores.dtype}; scores must be floating point (float64)")
    scores = scores.detach().to(torch.float64)
    nan = torch.isnan(scores)
    if bool(nan.any()):
        first = tuple(int(i) for i in torch.nonzero(nan)[0])
        raise InputError(
            f"selector {name!r} returned {int(nan.sum())} NaN score(s), first at (emotion, layer, neuron) = {first}; "
            f"use -inf for units that must never be chosen"
        )
    return scores


def score(
    stats: NeuronStats | AttributionStats, selector: str | Callable[..., Tensor] = "mad", *, seed: int = 0, **options: Any
) -> Float64[Tensor, "emotion layer neuron"]:
    """Scores of every unit by a registered selector (or a selector function), validated.

    Raises ``KeyError`` listing the registered selectors for an unknown name and :class:`InputError` naming
    the selector for unknown options, a wrong shape or dtype, or NaN scores.
    Example: ``score(stats, "lape", filter_percentile=95).shape == stats.shape``.
    """
    name, fn = _resolve(selector)
    out = fn(stats, **_bind_options(name, fn, seed, options))
    return _check_scores(out, stats.shape, name)


# ---------------------------------------------------------------------- budget
def _budget(top_frac: Any, count: Any, units: int) -> int:
    if count is not None:
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= units:
            raise InputError(f"count must be an integer in [0, {units}] (units per budget), got {count!r}")
        return count
    if isinstance(top_frac, bool) or not isinstance(top_frac, (int, float)) or not 0.0 <= float(top_frac) <= 1.0:
        raise InputError(f"top_frac must be a fraction in [0, 1] (0.005 = top 0.5%), got {top_frac!r}")
    return int(math.floor(float(top_frac) * units + 0.5))  # round half up


def top_k_mask(scores: Float64[Tensor, "row unit"], k: int) -> Bool[Tensor, "row unit"]:
    """Per row, the ``k`` best units: higher score first, ties broken by lower column index; ``-inf`` never.

    Exactly what a stable descending sort keeps, computed as the k-th largest value (``topk``) plus the
    first ties in index order: no full sort. Example: ``top_k_mask(torch.tensor([[1., 2., 2.]], dtype=torch.float64), 1)``
    keeps column 1.
    """
    R, M = scores.shape
    if k <= 0 or M == 0:
        return torch.zeros(R, M, dtype=torch.bool, device=scores.device)
    if k >= M:
        return scores > _NEG_INF
    kth = scores.topk(k, dim=1, sorted=False).values.amin(dim=1, keepdim=True)  # the k-th largest value per row
    mask = scores >= kth
    extra = mask.sum(dim=1) - k  # > 0 where units tied at the k-th value straddle the cut
    if bool((extra > 0).any()):  # drop the last `extra` tied units of those rows, in index order
        tied = (scores == kth) & (extra > 0)[:, None]
        rows, cols = tied.nonzero(as_tuple=True)  # row-major, so index order within a row
        n_tied = tied.sum(dim=1)
        rank = torch.arange(rows.numel(), device=rows.device) - (n_tied.cumsum(0) - n_tied)[rows]
        drop = rank >= (n_tied - extra)[rows]
        mask[rows[drop], cols[drop]] = False
    if bool((kth == _NEG_INF).any()):
        mask &= scores > _NEG_INF
    return mask


def select(
    scores_or_stats: Float[Tensor, "emotion layer neuron"] | NeuronStats | AttributionStats,
    *,
    selector: str | Callable[..., Tensor] | None = None,
    top_frac: float | int = DEFAULT_TOP_FRAC,
    count: int | None = None,
    per: str = "global",
    seed: int = 0,
    emotions: Sequence[str] | None = None,
    site: str | None = None,
    model_fingerprint: str | None = None,
    meta: dict[str, Any] | None = None,
    **options: Any,
) -> NeuronSet:
    """Take an equal budget of the best-scoring units for every emotion.

    * Budget k per emotion: ``round(top_frac * L * N)`` units ranked over all layers (``per="global"``,
      the paper's), or ``round(top_frac * N)`` in every layer (``per="layer"``); ``count`` overrides
      ``top_frac`` with an absolute number (per layer when ``per="layer"``). ``top_frac`` must be in
      [0, 1]: 0 gives empty sets, 1 every finite-scored unit.
    * Order: higher score first, ties to the lower flat index ``layer * N + neuron`` (deterministic).
    * Units scoring ``-inf`` are never chosen, so a budget may be under-filled (LAPE keeps each unit
      for one emotion only); ``meta["budget"]`` records k and ``counts`` what was filled.

    From stats, ``selector`` (default "mad") and ``options`` go to :func:`score` and the set carries the
    stats' emotions, site and fingerprint (``emotions`` may pick a subset). From a score tensor, pass
    ``emotions`` naming its rows; ``selector`` is then only a label.
    Example: ``select(stats, selector="conact", top_frac=0.01).counts``.
    """
    if per not in PER_CHOICES:
        raise InputError(f"per must be one of {list(PER_CHOICES)}, got {per!r}")
    if isinstance(scores_or_stats, (NeuronStats, AttributionStats)):
        stats = scores_or_stats
        name, _ = _resolve("mad" if selector is None else selector)
        scores = score(stats, "mad" if selector is None else selector, seed=seed, **options)
        all_emotions = stats.emotions
        site = stats.site if site is None else site
        model_fingerprint = stats.model_fingerprint if model_fingerprint is None else model_fingerprint
    else:
        if options:
            raise InputError(f"selector options {sorted(options)} only apply when scoring NeuronStats, not a score tensor")
        name = "scores" if selector is None else (selector if isinstance(selector, str) else _resolve(selector)[0])
        scores = _check_scores(scores_or_stats, None, name)
        if emotions is None or len(tuple(emotions)) != scores.shape[0]:
            raise InputError(f"pass emotions=... naming the {scores.shape[0]} rows of the score tensor, got {emotions!r}")
        all_emotions = tuple(emotions)
    if emotions is not None:
        emotions = tuple(emotions)
        unknown = [e for e in emotions if e not in all_emotions]
        if unknown:
            raise InputError(f"unknown emotion(s) {unknown}; expected a subset of {list(all_emotions)}")
        if emotions != tuple(all_emotions):
            scores = scores[[all_emotions.index(e) for e in emotions]]
    else:
        emotions = tuple(all_emotions)

    E, L, N = scores.shape
    if per == "global":
        k = _budget(top_frac, count, L * N)
        flat = einops.rearrange(scores, "e l n -> e (l n)")
        masks = einops.rearrange(top_k_mask(flat, k), "e (l n) -> e l n", l=L)
    else:
        k = _budget(top_frac, count, N)
        flat = einops.rearrange(scores, "e l n -> (e l) n")
        masks = einops.rearrange(top_k_mask(flat, k), "(e l) n -> e l n", e=E)
    info = dict(per=per, budget=k, count=count, seed=seed, options=_jsonable(options))
    return NeuronSet(
        masks.cpu(), tuple(emotions), selector=name, top_frac=None if count is not None else float(top_frac),
        site="act" if site is None else site, model_fingerprint=model_fingerprint or "",
        meta={**info, **(meta or {})},
    )


def find_neurons(
    stats: NeuronStats | AttributionStats,
    selector: str | Callable[..., Tensor] = "mad",
    top_frac: float | int = DEFAULT_TOP_FRAC,
    *,
    count: int | None = None,
    per: str = "global",
    seed: int = 0,
    emotions: Sequence[str] | None = None,
    meta: dict[str, Any] | None = None,
    **options: Any,
) -> NeuronSet:
    """Score ``stats`` with ``selector`` and take the budget: ``score`` + ``select`` in one call.

    The set carries the stats' emotions, site and model fingerprint. See :func:`select` for the budget.
    Example: ``find_neurons(stats, "mad", top_frac=0.005)["angry"].sum()``.
    """
    return select(stats, selector=selector, top_frac=top_frac, count=count, per=per, seed=seed,
                  emotions=emotions, meta=meta, **options)


__all__ = [
    "SELECTORS", "DEFAULT_TOP_FRAC", "score", "select", "find_neurons", "top_k_mask",
    "lap", "lape", "mad", "conact", "random_scores", "mean_diff", "cohens_d",
]
