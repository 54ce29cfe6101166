"""AtP on the shipped demo model: deactivation SE / ACE / ESS of AtP's units beside ConAct, MAD and random, and the
Spearman correlation between AtP scores and measured single-unit ablation effects (docs/demo_model.md).

    python scripts/atp_demo.py [--units 48] [--out atp_demo.json]
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from esn_lens import Lens, collect_attribution, deactivate, find_neurons
from esn_lens.attribution import emotion_option_ids, option_margin
from esn_lens.demo_model import (DEMO_EMOTIONS, DEMO_TOP_FRAC, deactivation_effects, demo_clips, demo_evaluator,
                                 identification_stats, load_demo_model)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = a.argsort().argsort().astype(float), b.argsort().argsort().astype(float)
    return float(np.corrcoef(ra, rb)[0, 1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--units", type=int, default=48, help="units per emotion for the single-unit ablation sample")
    ap.add_argument("--out", default="atp_demo.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.time()
    model, proc = load_demo_model()
    lens = Lens(model, proc)
    ev = demo_evaluator(lens)
    stats, pool = identification_stats(lens, demo_clips("identification"))
    att = collect_attribution(lens, pool, DEMO_EMOTIONS, evaluator=ev, progress=False)
    t_att = time.time() - t0
    sets = {name: find_neurons(att if name == "atp" else stats, name, top_frac=DEMO_TOP_FRAC)
            for name in ("atp", "conact", "mad", "random")}
    effects = deactivation_effects(lens, demo_clips("unseen"), sets)
    result = {"pool_per_emotion": len(pool) // len(DEMO_EMOTIONS), "attribution_seconds": round(t_att, 1),
              "counts": {k: v.counts for k, v in sets.items()},
              "deactivation": {k: {m: effects[k][m] for m in ("SE", "ACE", "ESS", "se_per")} for k in sets}}
    # single-unit ablation: the measured change of the mean margin over the pool clips of each emotion
    g = torch.Generator().manual_seed(0)
    scores = att.mean
    rho = {}
    for e_i, e in enumerate(DEMO_EMOTIONS):
        clips = [c for c in pool if c.emotion == e]
        prompts = [ev.prompt(c) for c in clips]
        batch = lens.batch_clips(clips, [p.text for p in prompts])
        ids = emotion_option_ids(ev, prompts)
        true = torch.full((len(clips),), e_i, dtype=torch.long)
        base = option_margin(lens.run(batch).logits, ids, true).mean()
        flat = scores[e_i].flatten()
        top = torch.topk(flat, args.units // 2).indices
        rest = torch.randperm(flat.numel(), generator=g)[: args.units // 2]
        sample = torch.unique(torch.cat([top, rest]))
        pred, meas = [], []
        for u in sample.tolist():
            units = torch.zeros(lens.n_layers, lens.d_mlp, dtype=torch.bool)
            units.view(-1)[u] = True
            m = option_margin(lens.run(batch, edits=[deactivate(units)]).logits, ids, true).mean()
            pred.append(float(flat[u]))          # AtP: expected drop of the margin
            meas.append(float(base - m))          # measured drop
        rho[e] = round(spearman(np.array(pred), np.array(meas)), 3)
    result["spearman_atp_vs_single_unit_ablation"] = rho
    result["seconds"] = round(time.time() - t0, 1)
    print(json.dumps(result, indent=1))
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
