#!/usr/bin/env python
"""The ESN protocol on the real-decoder demo (SmolLM2-135M frozen + trained audio encoder), with the library's tools.

Identification: the shipped demo's identification clips (training speakers), correctly answered, balanced.
Evaluation: the shipped demo's unseen-speaker clips (8 held-out speakers, 36 per emotion). Constrained scoring of
the emotion word. Selectors LAP, LAPE, MAD, ConAct, random (seeds 0 and 1) and AtP, budgets 0.5 / 1 / 2 % of the
30 x 1,536 units per emotion; deactivation SE / ACE / ESS with paired-bootstrap 95 % intervals; all MLPs off;
steering dose-response for the best selector and random; layer histogram; selector overlap. Results are written
to ``--out`` (JSON) after every part.

Example::

    python scripts/eval_real_demo.py --model esn_lens/assets/real_demo --out /tmp/rd/eval.json
    python scripts/eval_real_demo.py --real-model --out /tmp/rm/eval.json   # Whisper tiny.en + SmolLM2 (real_model)
"""
from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch

from esn_lens.attribution import collect_attribution
from esn_lens.demo_model import DEMO_EMOTIONS, demo_clips, demo_evaluator, identification_stats, load_demo_model
from esn_lens.evaluate import (accuracy_change_heatmap, bootstrap_ci, deactivation_conditions, find_result,
                               specificity, steering_conditions)
from esn_lens.interventions import Condition, deactivate
from esn_lens.lens import Lens
from esn_lens.real_demo import load_real_demo_model
from esn_lens.selectors import find_neurons

E = DEMO_EMOTIONS


def effects(res, names, clips):
    """SE/ACE/ESS (points) per set, with paired-bootstrap 95 % intervals over clips."""
    y = np.array([c.emotion for c in clips])
    base = np.array([p == t for p, t in zip(res["baseline"].predictions, y)], float)
    out = {}
    for name in names:
        H = 100 * accuracy_change_heatmap(res, E, name=name)
        sp = specificity(H)
        corr = {m: np.array([p == t for p, t in zip(find_result(res, "deactivate", emotion=m, neurons=name).predictions, y)],
                            float) for m in E}
        own = np.array([corr[t][i] for i, t in enumerate(y)])
        other = np.array([np.mean([corr[m][i] for m in E if m != t]) for i, t in enumerate(y)])
        out[name] = {"SE": sp["se_mean"], "ACE": sp["ace_mean"], "ESS": sp["ess_mean"],
                     "SE_ci": [100 * v for v in bootstrap_ci(own, base)],
                     "ACE_ci": [100 * v for v in bootstrap_ci(other, base)],
                     "ESS_ci": [100 * v for v in bootstrap_ci(own - other, np.zeros_like(own))],
                     "se_per": dict(zip(E, sp["se"].round(2).tolist())), "delta": H.round(1).tolist()}
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="folder of the trained parts (default: the shipped ones)")
    p.add_argument("--shipped-demo", action="store_true",
                   help="evaluate the shipped (regularised, from-scratch) demo model instead: the same protocol "
                        "without the real-demo extra (a smoke check of this script)")
    p.add_argument("--real-model", action="store_true",
                   help="evaluate the real-parts model (Whisper tiny.en encoder + SmolLM2, esn_lens.real_model; "
                        "--model: its projector folder, default the shipped one)")
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--budgets", default="0.01,0.005,0.02")
    p.add_argument("--alphas", default="1,2,4")
    p.add_argument("--steer", default="best,random0", metavar="SELECTORS",
                   help="selectors steered at the first budget (comma list; 'best' = the non-random selector "
                        "with the most negative ESS there; '' = no steering)")
    p.add_argument("--steer-only", default=None, metavar="SELECTORS",
                   help="skip deactivation: only steer these selectors' units at the first budget (comma list)")
    p.add_argument("--n-steer", type=int, default=None, help="unseen clips per emotion for steering (default: --n-main)")
    p.add_argument("--save-sets", default=None, metavar="DIR",
                   help="save every selector's NeuronSet at every budget there (<selector>_<budget>.safetensors)")
    p.add_argument("--sets-only", action="store_true", help="stop after identification and selection")
    p.add_argument("--limit", type=int, default=None, help="at most this many clips per emotion (a smoke run)")
    p.add_argument("--n-main", type=int, default=None,
                   help="unseen clips per emotion for the first budget, all MLPs off and steering (default: all)")
    p.add_argument("--n-extra", type=int, default=None, help="unseen clips per emotion for the other budgets")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    R: dict = {"timings": {}}

    def dump():
        with open(a.out, "w") as f:
            json.dump(R, f, indent=1, default=str)

    t0 = time.perf_counter()
    if a.real_model:
        from esn_lens.real_model import load_real_model

        model, proc = load_real_model(a.model)
    else:
        model, proc = load_demo_model(a.model) if a.shipped_demo else load_real_demo_model(a.model)
    lens = Lens(model, proc)
    ev = demo_evaluator(lens, E, a.batch)
    unseen = demo_clips("unseen")
    ident = demo_clips("identification")
    if a.limit:
        unseen = [c for e in E for c in [c for c in unseen if c.emotion == e][:a.limit]]
        ident = [c for e in E for c in [c for c in ident if c.emotion == e][:a.limit]]
    R["timings"]["load_s"] = round(time.perf_counter() - t0, 1)

    def subset(n):  # n clips per emotion, drawn across the held-out speakers (seeded)
        if n is None:
            return unseen
        return [c for e in E for c in random.Random(0).sample([c for c in unseen if c.emotion == e], n)]

    t0 = time.perf_counter()
    try:
        stats, pool = identification_stats(lens, ident, emotions=E, batch_size=a.batch)
    except Exception:  # noqa: BLE001 - a smoke run on an untrained model has no correct clips
        if not a.limit:
            raise
        pool = ident
        stats = lens.collect_stats(pool, [ev.prompt(c).text for c in pool], E, batch_size=a.batch, progress=False)
    R["pool_per_emotion"] = len(pool) // len(E)
    att = collect_attribution(lens, pool, E, evaluator=ev, batch_size=a.batch, progress=False)
    R["timings"]["identification_s"] = round(time.perf_counter() - t0, 1)
    budgets = [float(b) for b in a.budgets.split(",")]
    sets = {}
    for r in budgets:
        for sel in ("lap", "lape", "mad", "conact"):
            sets[(sel, r)] = find_neurons(stats, sel, top_frac=r)
        for s in (0, 1):
            sets[(f"random{s}", r)] = find_neurons(stats, "random", top_frac=r, seed=s)
        sets[("atp", r)] = find_neurons(att, "atp", top_frac=r)
    R["units_per_emotion"] = {str(r): int(sets[("mad", r)].masks[0].sum()) for r in budgets}
    r1 = budgets[0]
    R["layer_counts"] = {sel: sets[(sel, r1)].layer_counts().tolist() for sel in ("lap", "lape", "mad", "conact", "atp")}
    names = ("lap", "lape", "mad", "conact", "atp", "random0")
    R["jaccard"] = {f"{x}-{y}": sets[(x, r1)].jaccard(sets[(y, r1)]) for i, x in enumerate(names) for y in names[i + 1:]}
    dump()
    if a.save_sets:
        Path(a.save_sets).mkdir(parents=True, exist_ok=True)
        for (sel, r), ns in sets.items():
            ns.save(Path(a.save_sets) / f"{sel}_{r:g}.safetensors")
    if a.sets_only:
        return

    alphas = [float(x) for x in a.alphas.split(",")]

    def steer(selectors):
        t0 = time.perf_counter()
        clips = subset(a.n_steer if a.n_steer is not None else a.n_main)
        conds = [Condition("baseline")]
        for sel in selectors:
            conds += steering_conditions(sets[(sel, budgets[0])], alphas, name=sel)
        res = ev.run(clips, conds)
        R["steering"] = {"selectors": list(selectors), "alphas": [0] + alphas, "clips": len(clips),
                         **{sel: {e: [res["baseline"].share(e)] + [find_result(res, "steer", emotion=e, neurons=sel, alpha=x)
                                                                   .share(e) for x in alphas] for e in E}
                            for sel in selectors}}
        R["timings"]["steering_s"] = round(time.perf_counter() - t0, 1)
        dump()
        print(json.dumps(R["steering"]), flush=True)

    if a.steer_only:
        steer([x for x in a.steer_only.split(",") if x])
        return
    for k, r in enumerate(budgets):
        t0 = time.perf_counter()
        conds = [Condition("baseline")]
        if k == 0:
            conds.append(Condition("all_mlp_off", [deactivate(torch.ones(lens.n_layers, lens.d_mlp, dtype=torch.bool))]))
        sel_names = ["lap", "lape", "mad", "conact", "atp", "random0", "random1"]
        for sel in sel_names if k == 0 else sel_names[:-1]:  # the second random seed at the first budget only
            conds += deactivation_conditions(sets[(sel, r)], name=sel)
        clips = subset(a.n_main if k == 0 else a.n_extra)
        R.setdefault("eval_clips", {})[str(r)] = len(clips)
        res = ev.run(clips, conds)
        if k == 0:
            R["unseen_acc"] = res["baseline"].per_class()
            R["all_mlp_off_acc"] = res["all_mlp_off"].per_class()
        R.setdefault("deactivation", {})[str(r)] = effects(res, sel_names if k == 0 else sel_names[:-1], clips)
        R["timings"][f"deactivation_{r}_s"] = round(time.perf_counter() - t0, 1)
        dump()
        print(json.dumps({s: {m: round(v[m], 1) for m in ("SE", "ACE", "ESS")}
                          for s, v in R["deactivation"][str(r)].items()}), flush=True)
        if k == 0 and a.steer:  # steering: the named selectors ('best' = most negative ESS among non-random)
            d = R["deactivation"][str(r)]
            best = min(("lap", "lape", "mad", "conact", "atp"), key=lambda s: d[s]["ESS"])
            steer(list(dict.fromkeys(best if x == "best" else x for x in a.steer.split(",") if x)))


if __name__ == "__main__":
    main()
