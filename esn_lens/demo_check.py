"""The demo model's acceptance check, shared by the training script and ``scripts/demo_eval.py``: identification on
training-speaker clips, then deactivation and steering on unseen speakers (the criteria in ``docs/demo_model.md``)."""
from __future__ import annotations

import json
import random
import time
from typing import Any, Sequence

import torch

from .demo_model import (DEMO_EMOTIONS, deactivation_effects, identification_stats, per_class_accuracy, predict,
                         steering_shares)
from .interventions import deactivate
from .selectors import find_neurons


def evaluate_demo(lens: Any, train_clips: Sequence[Any], unseen_clips: Sequence[Any], top_frac: float, *,
                  emotions: Sequence[str] = DEMO_EMOTIONS, ident_per_emotion: int = 60,
                  ident_candidates: int = 100) -> dict:
    """Identification on training-speaker clips, deactivation and steering on unseen speakers; prints a summary."""
    emotions = tuple(emotions)
    t0 = time.perf_counter()
    rng = random.Random(1)
    by_e = {e: [c for c in train_clips if c.emotion == e] for e in emotions}
    cand = [c for e in emotions for c in rng.sample(by_e[e], min(ident_candidates, len(by_e[e])))]
    stats, pool = identification_stats(lens, cand, emotions=emotions, per_emotion=ident_per_emotion)
    sets = {name: find_neurons(stats, name, top_frac=top_frac) for name in ("conact", "mad", "random", "lap")}
    all_mlp = torch.ones(lens.n_layers, lens.d_mlp, dtype=torch.bool)
    p = predict(lens, unseen_clips, {"all_mlp_off": [deactivate(all_mlp)]}, emotions=emotions)
    res: dict = {"unseen_acc": per_class_accuracy(p["base"], unseen_clips, emotions),
                 "all_mlp_off_acc": per_class_accuracy(p["all_mlp_off"], unseen_clips, emotions),
                 "pool_per_emotion": len(pool) // len(emotions),
                 "budget_units": int(sets["conact"].masks[0].sum())}
    res["effects"] = deactivation_effects(lens, unseen_clips, sets, emotions=emotions)
    res["steer_conact"] = steering_shares(lens, unseen_clips, sets["conact"], emotions=emotions)
    res["eval_s"] = round(time.perf_counter() - t0, 1)
    eff = res["effects"]
    print(json.dumps({"unseen": res["unseen_acc"], "all_off": res["all_mlp_off_acc"],
                      **{k: {m: round(eff[k][m], 2) for m in ("SE", "ACE", "ESS")} | {"se_per": eff[k]["se_per"]}
                         for k in sets}, "steer": res["steer_conact"]}, indent=1))
    return res
