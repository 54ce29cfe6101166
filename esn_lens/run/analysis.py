"""The run's analysis: its predictions, neuron sets and pool turned into the results dict (deterministic).

Every figure comes from :mod:`esn_lens.metrics`; conditions are found by their fields
(:func:`esn_lens.evaluate.find_result`), never by parsing names.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import metrics
from ..evaluate import SERResult, find_result
from .folder import RESULTS_VERSION


def _f(x: Any) -> float | None:
    x = float(x)
    return None if math.isnan(x) else round(x, 6)


def _ci(x: np.ndarray) -> list[float | None]:
    lo, hi = metrics.ci(x)
    return [_f(lo), _f(hi)]


def analyse(run) -> dict[str, Any]:
    """The results dict of a run whose stages through ``steering`` are done (``run``: a :class:`~esn_lens.run.Run`;
    reads its public fields ``cfg``, ``folder``, ``split``, ``model_id``, ``n_layers``/``d_mlp``, ``sets``,
    ``sources``, ``deact``, ``steer``)."""
    cfg, E = run.cfg, list(run.split.emotions)
    clips_info = run.folder.read_json("clips.json")
    res: dict[str, Any] = {
        "version": RESULTS_VERSION,
        "config": cfg.identity(),
        "model": run.model_id,
        "emotions": E,
        "clips": {"identification": clips_info["counts"]["identification"],
                  "evaluation": clips_info["counts"]["evaluation"], "source": clips_info.get("source", {}),
                  "skipped": list(clips_info.get("source", {}).get("skipped", []))},
    }
    if cfg.discover:
        pool = run.folder.read_json("pool.json")
        res["clips"]["pool"] = pool["counts"]
        res["identification"] = {"accuracy": _f(pool["accuracy"]),
                                 "per_class": {e: _f(v) for e, v in pool["per_class"].items()},
                                 "unparsed": pool["unparsed"], "correct": pool["correct"]}
    L, N = run.model_id["n_layers"], run.model_id["d_mlp"]
    sel: dict[str, Any] = {}
    for name, ns in run.sets.items():
        lc = ns.layer_counts()
        sel[name] = {"source": run.sources[name], "selector": ns.selector, "top_frac": ns.top_frac,
                     "emotions": list(ns.emotions), "counts": ns.counts, "units": L * N,
                     "layer_counts": {"per_emotion": {e: lc[i].tolist() for i, e in enumerate(ns.emotions)},
                                      "total": lc.sum(0).tolist()}}
    if cfg.validate:
        res.update(_validation(run, E, sel))
    res["selectors"] = sel
    res["layers"] = layer_analysis(run.sets, L)
    return res


def _validation(run, E: list[str], sel: dict[str, Any]) -> dict[str, Any]:
    cfg, deact = run.cfg, run.deact
    base = find_result(deact, "baseline")
    labels = np.array(base.labels)
    out = {"baseline": {"accuracy": _f(base.accuracy), "per_class": {e: _f(v) for e, v in base.per_class().items()},
                        "unparsed": base.n_unparsed, "n": len(labels)}}
    base_c = metrics.correct(base.predictions, labels)
    boot = metrics.stratified_bootstrap(labels, E, cfg.bootstrap, cfg.seed) if cfg.bootstrap else None
    if boot is not None:
        out["baseline"]["ci"] = _ci(base_c[boot].mean(1))
    ess_reps: dict[str, np.ndarray] = {}
    for name, ns in run.sets.items():
        rows = [e for e in E if e in ns.emotions]
        masked: list[SERResult] = [find_result(deact, "deactivate", emotion=e, neurons=name) for e in rows]
        correct = [metrics.correct(r.predictions, labels) for r in masked]
        H, reps = metrics.accuracy_change(correct, base_c, labels, rows, boot)
        sp = metrics.specificity(H)
        d = {"emotions": rows, "heatmap": [[_f(v) for v in row] for row in H],
             "se": {e: _f(v) for e, v in zip(rows, sp["se"])}, "ace": {e: _f(v) for e, v in zip(rows, sp["ace"])},
             "ess": {e: _f(v) for e, v in zip(rows, sp["ess"])}, "se_mean": _f(sp["se_mean"]),
             "ace_mean": _f(sp["ace_mean"]), "ess_mean": _f(sp["ess_mean"]),
             "accuracy": {e: _f(c.mean()) for e, c in zip(rows, correct)},
             "unparsed": {e: int(r.n_unparsed) for e, r in zip(rows, masked)}}
        if reps is not None:
            se_r, ace_r, ess_r = metrics.se_ace_ess(reps)
            d["ci"] = {"se": {e: _ci(se_r[:, i]) for i, e in enumerate(rows)},
                       "ess": {e: _ci(ess_r[:, i]) for i, e in enumerate(rows)},
                       "se_mean": _ci(se_r.mean(1)), "ace_mean": _ci(ace_r.mean(1)), "ess_mean": _ci(ess_r.mean(1))}
            if rows == E:
                ess_reps[name] = ess_r.mean(1)
        sel[name]["deactivation"] = d
    if "random" in ess_reps:
        for name, r in ess_reps.items():
            if name != "random":
                sel[name]["deactivation"]["ci"]["ess_mean_minus_random"] = _ci(r - ess_reps["random"])
    if run.steer is not None:
        _steering(run, E, labels, sel)
    return out


def _steering(run, E: list[str], labels: np.ndarray, sel: dict[str, Any]) -> None:
    alphas, steer = run.cfg.alphas, run.steer
    base = find_result(steer, "baseline")
    base_c = metrics.correct(base.predictions, labels)
    for name, ns in run.sets.items():
        rows = [e for e in E if e in ns.emotions]
        got = {(e, a): find_result(steer, "steer", emotion=e, neurons=name, alpha=a) for e in rows for a in alphas}
        shift = {e: [_f(v) for v in metrics.target_shift(base.predictions, [got[e, a].predictions for a in alphas], e)]
                 for e in rows}
        mean = [_f(np.mean([shift[e][i] for e in rows])) for i in range(len(alphas))]
        heat = {}
        for a in alphas:
            H, _ = metrics.accuracy_change([metrics.correct(got[r, a].predictions, labels) for r in rows], base_c,
                                           labels, rows)
            heat[f"{a:g}"] = [[_f(v) for v in row] for row in H]
        sel[name]["steering"] = {
            "alphas": list(alphas), "emotions": rows, "target_shift": shift, "target_shift_mean": mean,
            "heatmaps": heat, "unparsed": {f"{e}:{a:g}": int(got[e, a].n_unparsed) for e in rows for a in alphas}}


def layer_analysis(sets: dict[str, Any], n_layers: int) -> dict[str, Any]:
    """Per-layer counts of every set and the Jaccard overlap between sets (per emotion and mean)."""
    names = list(sets)
    out: dict[str, Any] = {"n_layers": n_layers, "counts": {n: sets[n].layer_counts().sum(0).tolist() for n in names}}
    comparable = [n for n in names if sets[n].emotions == sets[names[0]].emotions
                  and sets[n].model_fingerprint == sets[names[0]].model_fingerprint and sets[n].site == sets[names[0]].site]
    if len(comparable) >= 1:
        emotions = sets[comparable[0]].emotions
        per = {e: [[1.0] * len(comparable) for _ in comparable] for e in emotions}
        mean = [[1.0] * len(comparable) for _ in comparable]
        for i, a in enumerate(comparable):
            for j, b in enumerate(comparable):
                if i < j:
                    jac = sets[a].jaccard(sets[b])
                    for e in emotions:
                        per[e][i][j] = per[e][j][i] = _f(jac[e])
                    mean[i][j] = mean[j][i] = _f(np.mean(list(jac.values())))
        out["overlap"] = {"metric": "jaccard", "selectors": comparable, "mean": mean, "per_emotion": per}
    cross = {}
    for n in names:
        if "@" in n:
            own = n.split("@")[0]
            if own in sets and "@" not in own:
                m = sets[own].overlap_matrix(sets[n], "jaccard", same_model=False)
                cross[n] = {"own": own, "rows": list(sets[own].emotions), "cols": list(sets[n].emotions),
                            "jaccard": [[_f(v) for v in row] for row in m.tolist()]}
    if cross:
        out["cross_dataset"] = cross
    return out



__all__ = ["analyse", "layer_analysis"]
