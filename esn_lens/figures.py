"""Figures of a run (matplotlib, Agg backend; nothing is shown on screen).

Each function takes plain numbers (lists / arrays, accuracy values as fractions) and returns a
``matplotlib.figure.Figure``; :func:`save` writes it as PNG. Values are drawn in accuracy points
(x100). Example::

    fig = heatmaps({"mad": H_mad, "random": H_rnd}, emotions)
    save(fig, "figures/deactivation.png")
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import TwoSlopeNorm  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

DIVERGING = "RdBu"  # negative (accuracy drop) red, positive blue, 0 white
SEQUENTIAL = "Blues"
#: A colour per built-in selector (others cycle through the tab10 palette).
SELECTOR_COLORS = {"lap": "#8c8c8c", "lape": "#b07aa1", "mad": "#4e79a7", "conact": "#e15759", "random": "#222222",
                   "mean_diff": "#59a14f", "cohens_d": "#f28e2b", "mean-diff": "#59a14f", "cohen's d": "#f28e2b"}
STYLE = {"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "xtick.labelsize": 8, "ytick.labelsize": 8,
         "legend.fontsize": 8, "figure.dpi": 100, "savefig.dpi": 110, "axes.spines.top": False,
         "axes.spines.right": False}


def color_of(name: str, i: int = 0) -> str:
    """The selector's colour (by name, any case); transferred sets (``mad@iemocap``) and others cycle tab10."""
    base = name.split("@")[0].lower()
    if base in SELECTOR_COLORS and "@" not in name:
        return SELECTOR_COLORS[base]
    from matplotlib.colors import to_hex

    return to_hex(plt.get_cmap("tab10")(i % 10))


def _points(x) -> np.ndarray:
    return 100.0 * np.asarray(x, dtype=float)


def _annotate(ax, M: np.ndarray, fmt: str, vmax: float, *, threshold: float = 0.55) -> None:
    for i in range(M.shape[0]):
        for j in range(M.shape[1]):
            v = M[i, j]
            if not math.isfinite(v):
                continue
            dark = abs(v) > threshold * vmax if vmax > 0 else False
            ax.text(j, i, format(v, fmt), ha="center", va="center", fontsize=8 if M.shape[0] <= 6 else 6,
                    color="white" if dark else "black")


def heatmaps(panels: Mapping[str, Any], emotions: Sequence[str] | Mapping[str, Sequence[str]], *,
             subtitles: Mapping[str, str] | None = None, title: str = "Accuracy change under deactivation",
             row_label: str = "deactivated ESNs of", col_label: str = "evaluated emotion",
             cbar_label: str = "accuracy change (points)", min_range: float = 10.0) -> Figure:
    """Side-by-side accuracy-change heatmaps (one per selector), one diverging scale centred at 0, annotated.

    ``panels[name]``: (rows x cols) accuracy changes as fractions; ``emotions``: the labels (one list for all
    panels, or one per panel). The colour scale spans at least +-``min_range`` points.
    """
    names = list(panels)
    mats = {n: _points(panels[n]) for n in names}
    labels = {n: list(emotions[n]) if isinstance(emotions, Mapping) else list(emotions) for n in names}
    finite = [np.abs(m[np.isfinite(m)]).max() for m in mats.values() if np.isfinite(m).any()]
    # at least +-10 points: a 2-point wobble stays pale, the paper's 10-15-point effects stand out
    vmax = max(math.ceil(max(finite or [0.0])), min_range)
    integral = all(np.allclose(m[np.isfinite(m)], np.round(m[np.isfinite(m)])) for m in mats.values())
    n = len(names)
    E = max(len(v) for v in labels.values()) if labels else 1
    cell = 0.42 if E <= 6 else 0.3
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, n, figsize=(max(2.4, E * cell + 0.9) * n + 1.0, E * cell + 2.3), squeeze=False,
                                 layout="constrained")
        norm = TwoSlopeNorm(vcenter=0.0, vmin=-vmax, vmax=vmax)
        im = None
        for k, (ax, name) in enumerate(zip(axes[0], names)):
            M, lab = mats[name], labels[name]
            im = ax.imshow(M, cmap=DIVERGING, norm=norm, aspect="equal")
            _annotate(ax, M, ".0f" if integral else ".1f", vmax)
            ax.set_xticks(range(len(lab)), lab, rotation=45, ha="right")
            ax.set_yticks(range(len(lab)), lab)
            if k > 0:
                ax.tick_params(axis="y", labelleft=False, left=False)
            ax.set_title(name + (f"\n{subtitles[name]}" if subtitles and name in subtitles else ""))
            ax.set_xlabel(col_label)
            if k == 0:
                ax.set_ylabel(row_label)
            for s in ax.spines.values():
                s.set_visible(False)
            ax.set_xticks(np.arange(len(lab) + 1) - 0.5, minor=True)
            ax.set_yticks(np.arange(len(lab) + 1) - 0.5, minor=True)
            ax.grid(which="minor", color="white", linewidth=1.0)
            ax.tick_params(which="minor", length=0)
        if im is not None:
            cb = fig.colorbar(im, ax=axes[0].tolist(), shrink=0.85, pad=0.02)
            cb.set_label(cbar_label)
        fig.suptitle(title)
    return fig


def dose_response(alphas: Sequence[float], curves: Mapping[str, Mapping[str, Any]], *,
                  title: str = "Steering: target-emotion shift vs alpha",
                  ylabel: str = "target shift (points)") -> Figure:
    """Target shift vs alpha: a panel with each selector's mean over emotions, then one panel per emotion.

    ``curves[selector][emotion]`` = shifts per alpha (fractions); ``curves[selector]["mean"]`` optional.
    """
    names = list(curves)
    emotions: list[str] = []
    for c in curves.values():
        emotions.extend(e for e in c if e != "mean" and e not in emotions)
    panels = ["mean"] + emotions
    a = np.asarray(alphas, dtype=float)
    with_origin = 0.0 not in a
    if with_origin:  # alpha = 0 is the un-edited model: shift 0 by definition
        a = np.concatenate([[0.0], a])
    order = np.argsort(a, kind="stable")
    span = float(a.max() - a.min()) or 1.0
    dodge = {name: (i - (len(names) - 1) / 2) * 0.012 * span for i, name in enumerate(names)}
    ncol = min(len(panels), 5)
    nrow = math.ceil(len(panels) / ncol)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(nrow, ncol, figsize=(2.5 * ncol + 0.6, 2.3 * nrow + 0.6), squeeze=False,
                                 sharey=True, layout="constrained")
        for k, panel in enumerate(panels):
            ax = axes[k // ncol][k % ncol]
            ax.axhline(0, color="#999999", lw=0.8, zorder=0)
            for i, name in enumerate(names):
                c = curves[name]
                y = c.get(panel) if panel != "mean" else (c.get("mean") if "mean" in c else
                                                         np.mean([c[e] for e in c], axis=0))
                if y is None:
                    continue
                y = _points(y)
                if with_origin:
                    y = np.concatenate([[0.0], y])
                ax.plot(a[order] + dodge[name], y[order], marker="o", ms=3.5, alpha=0.9, lw=1.8 if panel == "mean" else 1.3,
                        color=color_of(name, i), label=name, ls="--" if name.lower() == "random" else "-")
            ax.set_title("mean over emotions" if panel == "mean" else f"target: {panel}",
                         fontweight="bold" if panel == "mean" else "normal")
            ax.set_xlabel("alpha (gain 1 + alpha)")
            if k % ncol == 0:
                ax.set_ylabel(ylabel if k == 0 else "points")
            ax.set_xticks(a)
            ax.grid(alpha=0.25)
        for k in range(len(panels), nrow * ncol):
            axes[k // ncol][k % ncol].set_visible(False)
        h, lab = axes[0][0].get_legend_handles_labels()
        fig.legend(h, lab, loc="outside right center", frameon=False, title="selector")
        fig.suptitle(title)
    return fig


def layer_counts(counts: Mapping[str, Mapping[str, Any]], *, title: str = "ESNs per layer") -> Figure:
    """One panel per selector: ESN count per layer, stacked by emotion. ``counts[selector][emotion]`` = per layer."""
    names = list(counts)
    emotions: list[str] = []
    for c in counts.values():
        emotions.extend(e for e in c if e not in emotions)
    cmap = plt.get_cmap("tab10")
    ecol = {e: cmap(i % 10) for i, e in enumerate(emotions)}
    ncol = min(len(names), 3) or 1
    nrow = math.ceil(len(names) / ncol) or 1
    L = max((len(v) for c in counts.values() for v in c.values()), default=1)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(nrow, ncol, figsize=(max(3.2, 0.16 * L + 1.6) * ncol + 0.6, 2.2 * nrow + 0.7),
                                 squeeze=False, sharey=True, layout="constrained")
        x = np.arange(L)
        for k, name in enumerate(names):
            ax = axes[k // ncol][k % ncol]
            bottom = np.zeros(L)
            for e in emotions:
                v = np.asarray(counts[name].get(e, np.zeros(L)), dtype=float)
                ax.bar(x, v, bottom=bottom, color=ecol[e], width=0.85, label=e, linewidth=0)
                bottom += v
            ax.set_title(f"{name} ({int(bottom.sum())} units)")
            ax.set_xlabel("layer")
            if k % ncol == 0:
                ax.set_ylabel("selected units")
            step = max(1, L // 14)
            ax.set_xticks(x[::step])
            ax.set_xlim(-0.6, L - 0.4)
            ax.grid(axis="y", alpha=0.25)
        for k in range(len(names), nrow * ncol):
            axes[k // ncol][k % ncol].set_visible(False)
        h, lab = axes[0][0].get_legend_handles_labels()
        fig.legend(h, lab, loc="outside right center", frameon=False, title="emotion")
        fig.suptitle(title)
    return fig


def overlap_matrix(M: Any, rows: Sequence[str], cols: Sequence[str] | None = None, *,
                   title: str = "Overlap between selectors (Jaccard, mean over emotions)",
                   xlabel: str = "", ylabel: str = "", cbar_label: str = "Jaccard index") -> Figure:
    """An annotated overlap matrix on a 0..1 sequential scale (selectors x selectors, or emotions x emotions)."""
    A = np.asarray(M, dtype=float)
    cols = list(rows) if cols is None else list(cols)
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(0.55 * len(cols) + 2.4, 0.5 * len(rows) + 1.6), layout="constrained")
        im = ax.imshow(A, cmap=SEQUENTIAL, vmin=0.0, vmax=1.0, aspect="equal")
        _annotate(ax, A, ".2f", 1.0, threshold=0.6)
        ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
        ax.set_yticks(range(len(rows)), rows)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        for s in ax.spines.values():
            s.set_visible(False)
        cb = fig.colorbar(im, ax=ax, shrink=0.85)
        cb.set_label(cbar_label)
        ax.set_title(title)
    return fig


def cross_dataset_overlap(a, b, names: Sequence[str] = ("dataset A", "dataset B"), *, same_model: bool = True) -> Figure:
    """Emotion x emotion Jaccard overlap of two NeuronSets (e.g. the same selector on two corpora).

    Example: ``cross_dataset_overlap(ns_iemocap, ns_meld, ("IEMOCAP", "MELD"))``.
    """
    m = a.overlap_matrix(b, "jaccard", same_model=same_model)
    label = a.selector if a.selector == b.selector else f"{a.selector} / {b.selector}"
    return overlap_matrix(m.tolist(), list(a.emotions), list(b.emotions), ylabel=names[0], xlabel=names[1],
                          title=f"{label}: {names[0]} vs {names[1]} (Jaccard)")


def summary_bars(values: Mapping[str, Any], cis: Mapping[str, Any] | None = None, *,
                 title: str = "Specificity (mean ESS = SE - ACE)", ylabel: str = "mean ESS (points)") -> Figure:
    """One bar per selector with optional 95% intervals; the random bar hatched as the reference."""
    names = list(values)
    v = _points([values[n] if values[n] is not None else np.nan for n in names])
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(0.7 * len(names) + 1.8, 2.6), layout="constrained")
        bars = ax.bar(range(len(names)), v, color=[color_of(n, i) for i, n in enumerate(names)], width=0.65)
        for b, n in zip(bars, names):
            if n.lower() == "random":
                b.set_hatch("//")
                b.set_facecolor("white")
                b.set_edgecolor("#222222")
        if cis:
            lo = np.array([_points(cis[n])[0] if cis.get(n) and None not in cis[n] else np.nan for n in names])
            hi = np.array([_points(cis[n])[1] if cis.get(n) and None not in cis[n] else np.nan for n in names])
            ok = np.isfinite(lo)
            ax.errorbar(np.arange(len(names))[ok], v[ok], yerr=[v[ok] - lo[ok], hi[ok] - v[ok]], fmt="none",
                        ecolor="#333333", capsize=3, lw=1)
        ax.axhline(0, color="#999999", lw=0.8)
        ax.set_xticks(range(len(names)), names, rotation=20 if len(names) > 5 else 0)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.25)
    return fig


def save(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as PNG (atomically) and close it."""
    import io

    from .io import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", facecolor="white")  # constrained layout already fits everything
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


__all__ = ["heatmaps", "dose_response", "layer_counts", "overlap_matrix", "cross_dataset_overlap", "summary_bars", "save",
           "color_of"]
