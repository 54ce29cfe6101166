"""The paper's metrics over a table of per-clip predictions (the one implementation).

A prediction table is the true emotion of every clip (``labels``) and, per condition, the predicted emotion
of every clip (``None`` = unparsed, counted wrong). Everything here is plain numpy on those arrays:

- :func:`accuracy_change` -- the accuracy-change heatmap (rows: the condition per masked emotion, columns: the
  evaluated emotion), optionally with stratified-bootstrap replicates;
- :func:`se_ace_ess` / :func:`specificity` -- SE(e) = H[e, e], ACE(e) = mean over e' != e of H[e', e],
  ESS = SE - ACE;
- :func:`share` / :func:`target_shift` -- the share of clips predicted as an emotion and its change under
  steering (dose-response in alpha);
- :func:`stratified_bootstrap` / :func:`ci` / :func:`paired_bootstrap_ci` -- bootstrap intervals, resampling
  clips within each true emotion (or pairs of per-clip outcomes).

Example::

    labels = np.array(["angry", "angry", "sad", "sad"])
    base = correct(["angry", "angry", "sad", "sad"], labels)      # [1, 1, 1, 1]
    masked = correct(["sad", "angry", "sad", "sad"], labels)      # [0, 1, 1, 1]
    H, _ = accuracy_change([masked], base, labels, ["angry", "sad"])   # [[-0.5, 0.0]]
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .errors import InputError

#: per-clip values: a list or a 1-D array (true emotions, or predicted emotions with None = unparsed)
Labels = Sequence[str] | np.ndarray
Preds = Sequence[str | None] | np.ndarray


def correct(predictions: Preds, labels: Labels) -> np.ndarray:
    """Per-clip correctness (float 0/1) of ``predictions`` against ``labels``; an unparsed answer is wrong."""
    if len(predictions) != len(labels):
        raise InputError(f"{len(predictions)} predictions for {len(labels)} labels")
    return np.array([p == y for p, y in zip(predictions, labels)], dtype=float)


def per_class(correct_: np.ndarray, labels: Labels, emotions: Sequence[str]) -> dict[str, float]:
    """Accuracy per true emotion (NaN for an emotion without clips)."""
    c, y = np.asarray(correct_, dtype=bool), np.asarray(labels)
    return {e: (float(c[y == e].mean()) if (y == e).any() else float("nan")) for e in emotions}


def share(predictions: Preds, emotion: str) -> float:
    """Fraction of all clips predicted as ``emotion`` (NaN for no clips)."""
    return float(np.mean([p == emotion for p in predictions])) if len(predictions) else float("nan")


def target_shift(base: Preds, steered: Sequence[Preds], emotion: str) -> list[float]:
    """Share of clips predicted as ``emotion`` under each steered condition minus its share at baseline."""
    b = share(base, emotion)
    return [share(p, emotion) - b for p in steered]


def stratified_bootstrap(labels: Labels, emotions: Sequence[str], n_boot: int, seed: int = 0) -> np.ndarray:
    """Bootstrap resamples of clip indices, ``(n_boot, n_clips)``: each emotion's clips resampled among themselves
    (so every replicate keeps the per-emotion counts). Columns are grouped by emotion, in ``emotions`` order."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    cols = []
    for e in emotions:
        idx = np.flatnonzero(labels == e)
        if idx.size:
            cols.append(idx[rng.integers(0, idx.size, size=(n_boot, idx.size))])
    if not cols:
        return np.zeros((n_boot, 0), dtype=np.int64)
    return np.concatenate(cols, axis=1)


def accuracy_change(rows: Sequence[np.ndarray], base: np.ndarray, labels: Labels, cols: Sequence[str],
                    boot: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Accuracy-change heatmap and its bootstrap replicates.

    ``rows``: per-clip correctness of each edited condition (one heatmap row each, e.g. one per masked emotion);
    ``base``: per-clip correctness of the baseline; ``cols``: the evaluated emotions. ``H[i, j]`` = accuracy on
    clips of ``cols[j]`` under ``rows[i]`` minus the baseline's. With ``boot`` (from :func:`stratified_bootstrap`)
    also returns ``(n_boot, rows, cols)`` replicates; else ``None``.
    """
    labels = np.asarray(labels)
    base = np.asarray(base, dtype=float)
    H = np.zeros((len(rows), len(cols)))
    reps = None if boot is None else np.zeros((boot.shape[0], len(rows), len(cols)))
    for j, e in enumerate(cols):
        m = labels == e
        b = base[m].mean()
        if reps is not None:
            bl, bm = labels[boot], base[boot]
            cnt = (bl == e).sum(1)
            b_rep = (bm * (bl == e)).sum(1) / np.maximum(cnt, 1)
        for i, c in enumerate(rows):
            c = np.asarray(c, dtype=float)
            H[i, j] = c[m].mean() - b
            if reps is not None:
                reps[:, i, j] = (c[boot] * (bl == e)).sum(1) / np.maximum(cnt, 1) - b_rep
    return H, reps


def se_ace_ess(H: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SE, ACE and ESS per evaluated emotion of a heatmap, or of a stack of heatmaps (last two axes)."""
    H = np.asarray(H, dtype=float)
    E = H.shape[-1]
    se = np.diagonal(H, axis1=-2, axis2=-1).copy()
    ace = (H.sum(-2) - se) / (E - 1)
    return se, ace, se - ace


def specificity(heatmap: np.ndarray) -> dict[str, np.ndarray | float]:
    """SE(e) = H[e,e]; ACE(e) = mean over e' != e of H[e',e]; ESS = SE - ACE (and their means).

    With deactivation a specific set gives a negative SE and ACE near 0, i.e. a negative ESS.
    """
    H = np.asarray(heatmap, dtype=float)
    E = H.shape[0]
    if H.shape != (E, E) or E < 2:
        raise InputError(f"heatmap must be square with at least 2 emotions, got shape {H.shape}")
    se, ace, ess = se_ace_ess(H)
    return {"se": se, "ace": ace, "ess": ess, "se_mean": float(se.mean()), "ace_mean": float(ace.mean()),
            "ess_mean": float(ess.mean())}


def ci(x: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates ``x`` (0.95: the 2.5 % and 97.5 % quantiles)."""
    q = (0.025, 0.975) if level == 0.95 else ((1 - level) / 2, 1 - (1 - level) / 2)
    lo, hi = np.quantile(np.asarray(x, dtype=float), q)
    return float(lo), float(hi)


def paired_bootstrap_ci(correct_edit: np.ndarray, correct_base: np.ndarray, *, n_boot: int = 1000,
                        level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Paired bootstrap interval of an accuracy change (the same clips under two conditions)."""
    a, b = np.asarray(correct_edit, float), np.asarray(correct_base, float)
    if a.shape != b.shape or a.size == 0:
        raise InputError("bootstrap_ci needs two equal-length, non-empty arrays of per-clip correctness")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.size, size=(n_boot, a.size))
    lo, hi = np.quantile(a[idx].mean(1) - b[idx].mean(1), [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


__all__ = ["correct", "per_class", "share", "target_shift", "stratified_bootstrap", "accuracy_change", "se_ace_ess",
           "specificity", "ci", "paired_bootstrap_ci"]
