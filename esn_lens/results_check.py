"""Check a ``results.json`` against the schema a run writes, before anything is rendered from it.

A hand-edited or damaged file (a 3 x 4 heatmap for 3 emotions, an accuracy that its per-class values and counts do
not give, a string where a number belongs) is refused with one :class:`~esn_lens.errors.CorruptFileError` line
naming the file and the first field that is wrong. Only what a run writes is checked; extra keys are allowed.
"""
from __future__ import annotations

import math
from typing import Any

from .errors import CorruptFileError

#: an accuracy recomputed from per-class values and counts must match the stored one to this
TOLERANCE = 1e-6


class _Bad(Exception):
    pass


def _num(v: Any, where: str, lo: float | None = None, hi: float | None = None, *, null: bool = False) -> float | None:
    if v is None and null:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise _Bad(f"{where} is {v!r}, expected a finite number")
    if (lo is not None and v < lo - 1e-12) or (hi is not None and v > hi + 1e-12):
        raise _Bad(f"{where} is {v!r}, expected a value in [{lo}, {hi}]")
    return float(v)


def _int(v: Any, where: str, lo: int = 0) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise _Bad(f"{where} is {v!r}, expected an integer >= {lo}")
    return v


def _dict(v: Any, where: str, keys: list[str] | None = None) -> dict:
    if not isinstance(v, dict):
        raise _Bad(f"{where} is {type(v).__name__}, expected an object")
    if keys is not None and sorted(v) != sorted(keys):
        raise _Bad(f"{where} has keys {sorted(v)}, expected the run's emotions {sorted(keys)}")
    return v


def _emotions(v: Any, where: str) -> list[str]:
    if not isinstance(v, list) or len(v) < 2 or not all(isinstance(e, str) for e in v) or len(set(v)) != len(v):
        raise _Bad(f"{where} is {v!r}, expected a list of at least 2 distinct emotion names")
    return v


def _matrix(v: Any, where: str, n: int, lo: float, hi: float) -> list[list[float | None]]:
    if not isinstance(v, list) or len(v) != n or not all(isinstance(r, list) and len(r) == n for r in v):
        shape = f"{len(v)} x {'/'.join(str(len(r)) if isinstance(r, list) else '?' for r in v)}" if isinstance(v, list) else type(v).__name__
        raise _Bad(f"{where} has shape {shape}, expected {n} x {n} (one row and column per emotion)")
    return [[_num(x, f"{where}[{i}][{j}]", lo, hi, null=True) for j, x in enumerate(r)] for i, r in enumerate(v)]


def _accuracy_block(b: Any, where: str, emotions: list[str], counts: dict[str, int] | None) -> None:
    b = _dict(b, where)
    acc = _num(b.get("accuracy"), f"{where}.accuracy", 0, 1, null=True)
    per = _dict(b.get("per_class"), f"{where}.per_class", emotions)
    vals = {e: _num(per[e], f"{where}.per_class.{e}", 0, 1, null=True) for e in emotions}
    if "n" in b:
        n = _int(b["n"], f"{where}.n")
        if counts is not None and n != sum(counts.values()):
            raise _Bad(f"{where}.n is {n}, but clips.evaluation counts {sum(counts.values())} clips")
        if "unparsed" in b and _int(b["unparsed"], f"{where}.unparsed") > n:
            raise _Bad(f"{where}.unparsed is {b['unparsed']}, more than its {n} clips")
    if counts is not None and acc is not None and all(vals[e] is not None or counts[e] == 0 for e in emotions):
        total = sum(counts.values())
        if total:
            expect = sum((vals[e] or 0.0) * counts[e] for e in emotions) / total
            if abs(expect - acc) > TOLERANCE:
                raise _Bad(f"{where}.accuracy is {acc!r}, but its per-class accuracies and clip counts give "
                           f"{expect:.6g}")


def _deactivation(d: Any, where: str, emotions: list[str]) -> None:
    d = _dict(d, where)
    de = _emotions(d.get("emotions"), f"{where}.emotions")
    if not set(de) <= set(emotions):
        raise _Bad(f"{where}.emotions {de} are not among the run's emotions {emotions}")
    hm = _matrix(d.get("heatmap"), f"{where}.heatmap", len(de), -1, 1)
    for name in ("se", "ace", "ess"):
        _dict(d.get(name), f"{where}.{name}", de)
    for i, e in enumerate(de):
        se, ace, ess = (_num(d[k][e], f"{where}.{k}.{e}", -2, 2, null=True) for k in ("se", "ace", "ess"))
        if se is not None and hm[i][i] is not None and abs(se - hm[i][i]) > TOLERANCE:
            raise _Bad(f"{where}.se.{e} is {se!r}, but the heatmap's diagonal holds {hm[i][i]!r}")
        if None not in (se, ace, ess) and abs(ess - (se - ace)) > TOLERANCE:
            raise _Bad(f"{where}.ess.{e} is {ess!r}, but se - ace is {se - ace:.6g}")
    for name in ("se_mean", "ace_mean", "ess_mean"):
        if name in d:
            _num(d[name], f"{where}.{name}", -2, 2, null=True)
    if "accuracy" in d:
        acc = _dict(d["accuracy"], f"{where}.accuracy", de)
        for e in de:
            _num(acc[e], f"{where}.accuracy.{e}", 0, 1, null=True)


def _steering(s: Any, where: str, emotions: list[str]) -> None:
    s = _dict(s, where)
    se = _emotions(s.get("emotions"), f"{where}.emotions")
    for alpha, hm in _dict(s.get("heatmaps", {}), f"{where}.heatmaps").items():
        _matrix(hm, f"{where}.heatmaps.{alpha}", len(se), -1, 1)


def check_results(r: Any, path: Any = "results.json") -> dict[str, Any]:
    """``r`` when it has the shape of a run's results, else :class:`CorruptFileError` naming ``path`` and the field.

    Example: ``check_results(json.load(open("run/results.json")), "run/results.json")``.
    """
    try:
        r = _dict(r, "the file")
        emotions = _emotions(r.get("emotions"), "emotions")
        clips = _dict(r.get("clips"), "clips")
        counts: dict[str, dict[str, int] | None] = {}
        for side in ("identification", "evaluation"):
            if side in clips:
                c = _dict(clips[side], f"clips.{side}", emotions)
                counts[side] = {e: _int(c[e], f"clips.{side}.{e}") for e in emotions}
        if "model" in r:
            m = _dict(r["model"], "model")
            for k in ("n_layers", "d_mlp"):
                if k in m:
                    _int(m[k], f"model.{k}", 1)
        if "baseline" in r:
            _accuracy_block(r["baseline"], "baseline", emotions, counts.get("evaluation"))
        if "identification" in r:
            _accuracy_block(r["identification"], "identification", emotions, None)
        for name, s in _dict(r.get("selectors", {}), "selectors").items():
            s = _dict(s, f"selectors.{name}")
            units = s.get("units")
            if "counts" in s:
                for e, k in _dict(s["counts"], f"selectors.{name}.counts").items():
                    if e not in emotions:
                        raise _Bad(f"selectors.{name}.counts names {e!r}, not one of the run's emotions {emotions}")
                    k = _int(k, f"selectors.{name}.counts.{e}")
                    if isinstance(units, int) and k > units:
                        raise _Bad(f"selectors.{name}.counts.{e} is {k}, more than the model's {units} units")
            if "deactivation" in s:
                _deactivation(s["deactivation"], f"selectors.{name}.deactivation", emotions)
            if "steering" in s:
                _steering(s["steering"], f"selectors.{name}.steering", emotions)
    except _Bad as e:
        raise CorruptFileError(f"{path}: results do not match what a run writes ({e}); was the file edited? rerun "
                               "the run, or restore the file") from None
    return r


__all__ = ["check_results", "TOLERANCE"]
