#!/usr/bin/env python
"""Metrics from the folders of ``scripts/study_real_model.py`` (one per projector seed): accuracy (bfloat16 vs
float32), every MLP unit off, SE / ACE / ESS with paired-bootstrap 95 % intervals per selector and budget, the
random-set baseline (mean and sd over seeds), steering shares, the controls (audio positions only, neutral twins,
transcript alone), layer profiles, selector overlap and cross-seed overlap. Written into ``--metrics`` under
``"study"`` (docs/real_model.md's tables are printed from it by ``scripts/real_model_tables.py``).

Example::

    python scripts/study_real_summary.py --runs /work/study-runs/seed0 /work/study-runs/seed1 /work/study-runs/seed2 \\
        --metrics esn_lens/assets/real_model/metrics.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from esn_lens.demo_model import DEMO_EMOTIONS
from esn_lens.evaluate import SERResult, accuracy_change_heatmap, bootstrap_ci, find_result, specificity
from esn_lens.interventions import Condition
from esn_lens.neurons import NeuronSet

E = DEMO_EMOTIONS
SELECTORS = ("lap", "lape", "mad", "conact", "atp")


def job(run: Path, name: str, ids: list[str] | None = None) -> dict[str, SERResult] | None:
    """The job's results (condition -> SERResult with its spec), optionally only the clips ``ids`` (in that order)."""
    d = run / name
    if not (d / "conditions.json").exists():
        return None
    specs = json.loads((d / "conditions.json").read_text())
    chunks = [json.loads(f.read_text()) for f in sorted(d.glob("chunk_*.json"))]
    if not chunks:
        return None
    clips = [c for ch in chunks for c in ch["clips"]]
    labels = [y for ch in chunks for y in ch["labels"]]
    pred = {n: [p for ch in chunks for p in ch["pred"][n]] for n in specs}
    if ids is not None:
        pos = {c: i for i, c in enumerate(clips)}
        keep = [pos[c] for c in ids]
        labels, pred = [labels[i] for i in keep], {n: [v[i] for i in keep] for n, v in pred.items()}
    return {n: SERResult(n, E, labels, pred[n], spec=Condition(n, [], **s)) for n, s in specs.items()}


def clips_of(run: Path, name: str) -> list[str]:
    return [c for f in sorted((run / name).glob("chunk_*.json")) for c in json.loads(f.read_text())["clips"]]


def acc(r: SERResult) -> dict:
    pc = r.per_class()
    return {**{e: round(100 * pc[e], 1) for e in E}, "mean": round(100 * float(np.mean([pc[e] for e in E])), 1)}


def effects(res: dict[str, SERResult], name: str) -> dict:
    """SE / ACE / ESS (points) of one set, paired-bootstrap 95 % intervals over clips (as eval_real_demo.py)."""
    base = res["baseline"]
    y = base.labels
    H = 100 * accuracy_change_heatmap(res, E, name=name)
    sp = specificity(H)
    corr = {m: find_result(res, "deactivate", emotion=m, neurons=name).correct().astype(float) for m in E}
    own = np.array([corr[t][i] for i, t in enumerate(y)])
    other = np.array([np.mean([corr[m][i] for m in E if m != t]) for i, t in enumerate(y)])
    b = base.correct().astype(float)
    r1 = lambda v: round(float(v), 1)  # noqa: E731
    return {"SE": r1(sp["se_mean"]), "ACE": r1(sp["ace_mean"]), "ESS": r1(sp["ess_mean"]),
            "SE_ci": [r1(100 * v) for v in bootstrap_ci(own, b)], "ACE_ci": [r1(100 * v) for v in bootstrap_ci(other, b)],
            "ESS_ci": [r1(100 * v) for v in bootstrap_ci(own - other, np.zeros_like(own))],
            "se_per": dict(zip(E, np.round(sp["se"], 1).tolist())), "delta": np.round(H, 1).tolist()}


def random_summary(eff: dict, seeds: list[str]) -> dict:
    out = {}
    for k in ("SE", "ACE", "ESS"):
        v = np.array([eff[s][k] for s in seeds])
        out[k] = [round(float(v.mean()), 1), round(float(v.std(ddof=1)) if len(v) > 1 else 0.0, 1)]
    out["seeds"] = len(seeds)
    return out


def sets_of(run: Path, r: float) -> dict[str, torch.Tensor]:
    d = run / "sets"
    return {f.name.rsplit("_", 1)[0]: NeuronSet.load(f).masks for f in sorted(d.glob(f"*_{r:g}.safetensors"))}


def jaccard(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over emotions of |A & B| / |A | B| (masks compared directly: the models' fingerprints differ)."""
    inter = (a & b).flatten(1).sum(1).float()
    union = (a | b).flatten(1).sum(1).float()
    return round(float((inter / union.clamp(min=1)).mean()), 3)


def thirds(m: torch.Tensor) -> list[int]:
    per_layer = m.sum((0, 2))
    return [int(per_layer[i:i + 10].sum()) for i in (0, 10, 20)]


def summarise(run: Path) -> dict:
    R: dict = {"timings": json.loads((run / "timings.json").read_text()) if (run / "timings.json").exists() else {}}
    R["jobs"] = {}
    for d in sorted(x for x in run.iterdir() if (x / "conditions.json").exists()):
        ch = [json.loads(f.read_text()) for f in sorted(d.glob("chunk_*.json"))]
        secs, rows = sum(c["seconds"] for c in ch), sum(c["rows"] for c in ch)
        R["jobs"][d.name] = {"clips": sum(len(c["clips"]) for c in ch), "conditions": len(ch[0]["pred"]) if ch else 0,
                             "rows": rows, "seconds": round(secs, 1), "ms_per_row": round(1000 * secs / max(rows, 1))}
    base = job(run, "base")
    if base:
        R["clips"] = len(base["baseline"].labels)
        R["unseen_acc"], R["all_mlp_off_acc"] = acc(base["baseline"]), acc(base["all_mlp_off"])
        b = base["baseline"].correct().astype(float)
        R["unseen_acc_ci"] = [round(100 * v, 1) for v in bootstrap_ci(b, np.zeros_like(b))]
        R["all_mlp_off_shares"] = {e: round(100 * base["all_mlp_off"].share(e), 1) for e in E}
        R["baseline_shares"] = {e: round(100 * base["baseline"].share(e), 1) for e in E}
    fp = job(run, "fp32_base")
    if fp and base:
        ids = clips_of(run, "fp32_base")
        b16 = job(run, "base", ids)["baseline"]
        R["fp32_acc"] = acc(fp["baseline"])
        R["bf16_fp32_agreement"] = round(100 * float(np.mean([p == q for p, q in zip(fp["baseline"].predictions,
                                                                                       b16.predictions)])), 1)
    if (run / "sets" / "done.json").exists():
        R["pool_per_emotion"] = json.loads((run / "sets" / "done.json").read_text())["pool_per_emotion"]
    R["deactivation"], R["random"], R["eval_clips"] = {}, {}, {}
    for d in sorted(run.glob("deact_*")):
        r = d.name.split("_", 1)[1]
        res = job(run, d.name)
        if not res:
            continue
        names = sorted({s.spec.neurons for s in res.values() if s.spec.kind == "deactivate"},
                       key=lambda n: (n.startswith("random"), SELECTORS.index(n) if n in SELECTORS else n))
        complete = [n for n in names if all(f"{n}|mask:{e}" in res for e in E)]
        R["eval_clips"][r] = len(res["baseline"].labels)
        R["deactivation"][r] = {n: effects(res, n) for n in complete}
        rs = [n for n in complete if n.startswith("random")]
        if rs:
            R["random"][r] = random_summary(R["deactivation"][r], rs)
    ids = clips_of(run, "deact_0.01")[:48] if (run / "deact_0.01").exists() else []
    if len(ids) == 48:  # the first 12 clips per emotion: the seed sweep's evaluation clips on every seed
        res = job(run, "deact_0.01", ids)
        R["deactivation_48"] = {n: effects(res, n) for n in R["deactivation"]["0.01"]}
    st = job(run, "steer_0.01")
    if st:
        sets = sorted({s.spec.neurons for s in st.values() if s.spec.kind == "steer"},
                      key=lambda n: (n.startswith("random"), SELECTORS.index(n) if n in SELECTORS else n))
        alphas = sorted({s.spec.alpha for s in st.values() if s.spec.kind == "steer"})
        R["steering"] = {"clips": len(st["baseline"].labels), "alphas": [0.0] + alphas, "sets": sets,
                         "share": {n: {e: [round(100 * st["baseline"].share(e), 1)] +
                                       [round(100 * find_result(st, "steer", emotion=e, neurons=n, alpha=a).share(e), 1)
                                        for a in alphas] for e in E} for n in sets}}
        R["steering"]["mean_shift"] = {n: [round(float(np.mean([R["steering"]["share"][n][e][k] -
                                                                 R["steering"]["share"][n][e][0] for e in E])), 1)
                                           for k in range(len(alphas) + 1)] for n in sets}
    pos = job(run, "positions_0.01")
    if pos:
        ids = clips_of(run, "positions_0.01")
        full = job(run, "deact_0.01", ids)
        R["positions"] = {"clips": len(ids)}
        for n in sorted({s.spec.neurons for s in pos.values() if s.spec.kind == "deactivate"}):
            sel = n.split("@")[0]
            R["positions"][sel] = {"audio": effects(pos, n), "all": effects(full, sel)}
    R["twins"] = twins(run)
    tf = run / "text_only.json"
    if tf.exists():
        t = json.loads(tf.read_text())
        r = SERResult("text", E, t["labels"], t["pred"])
        R["text_only"] = {"clips": len(t["labels"]), "acc": acc(r), "shares": {e: round(100 * r.share(e), 1) for e in E},
                          "seconds": t["seconds"]}
    if (run / "sets").exists():
        s1 = sets_of(run, 0.01)
        R["layer_thirds"] = {n: thirds(m) for n, m in s1.items() if n in SELECTORS}
        names = [n for n in (*SELECTORS, "random0", "random1") if n in s1]
        R["selector_jaccard"] = {f"{a}-{b}": jaccard(s1[a], s1[b]) for i, a in enumerate(names) for b in names[i + 1:]}
        R["units_per_emotion"] = {r: int(m.flatten(1).sum(1)[0]) for r in ("0.005", "0.01", "0.02")
                                  for m in [sets_of(run, float(r)).get("mad")] if m is not None}
    return R


def twins(run: Path) -> dict | None:
    f = run / "twins_acts.pt"
    if not f.exists():
        return None
    a = torch.load(f)
    m_emo = a["emo_sum"] / a["emo_T"].clamp(min=1).view(-1, 1, 1)
    m_twin = a["twin_sum"] / a["twin_T"].clamp(min=1).view(-1, 1, 1)
    s1 = sets_of(run, 0.01)
    out: dict = {"activation": {}, "answers": {}}
    for n in (*SELECTORS, "random0"):
        if n not in s1:
            continue
        row = {}
        for i, e in enumerate(E):
            if e == "neutral":
                continue
            mask = s1[n][i]
            emo, tw = float(m_emo[i][mask].mean()), float(m_twin[i][mask].mean())
            frac = float((m_emo[i][mask] > m_twin[i][mask]).float().mean())
            row[e] = {"emotional": round(emo, 4), "twin": round(tw, 4), "share_higher_on_emotional": round(100 * frac, 1)}
        out["activation"][n] = row
    for e in E:
        res = job(run, f"twins_{e}")
        if not res:
            continue
        full = job(run, "deact_0.01", clips_of(run, f"twins_{e}"))  # the emotional originals, same clip ids
        row = {"pairs": len(res["baseline"].labels), "twin_base_share": {k: round(100 * res["baseline"].share(k), 1)
                                                                         for k in E}}
        if full:
            row["original_base_share_e"] = round(100 * full["baseline"].share(e), 1)
        for n in (*SELECTORS, "random0"):
            if f"{n}|mask:{e}" not in res:
                continue
            d = res[f"{n}|mask:{e}"]
            s = find_result(res, "steer", emotion=e, neurons=n, alpha=2.0)
            row[n] = {"twin_off_share_e": round(100 * d.share(e), 1), "twin_off_share_neutral": round(100 * d.share("neutral"), 1),
                      "twin_steer2_share_e": round(100 * s.share(e), 1)}
            if full and f"{n}|mask:{e}" in full:
                row[n]["original_off_share_e"] = round(100 * full[f"{n}|mask:{e}"].share(e), 1)
        out["answers"][e] = row
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="+", required=True, help="one study folder per projector seed (seed 0 first)")
    p.add_argument("--metrics", required=True)
    a = p.parse_args()
    runs = [Path(r) for r in a.runs]
    S = {"dtype": "bfloat16 (decoder, encoder and projector) unless a key says float32",
         "produced_by": "scripts/study_real_model.py + scripts/study_real_summary.py",
         "seeds": {r.name: summarise(r) for r in runs}}
    cross = {}
    for i, x in enumerate(runs):
        for y in runs[i + 1:]:
            if (x / "sets").exists() and (y / "sets").exists():
                sx, sy = sets_of(x, 0.01), sets_of(y, 0.01)
                cross[f"{x.name}-{y.name}"] = {n: jaccard(sx[n], sy[n]) for n in (*SELECTORS, "random0") if n in sx and n in sy}
    S["cross_seed_jaccard"] = cross
    M = json.loads(Path(a.metrics).read_text())
    M["study"] = S
    Path(a.metrics).write_text(json.dumps(M, indent=1) + "\n")
    print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk in ("unseen_acc", "fp32_acc", "all_mlp_off_acc")}
                      for k, v in S["seeds"].items()}, indent=1))


if __name__ == "__main__":
    main()
