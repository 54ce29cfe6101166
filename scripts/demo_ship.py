#!/usr/bin/env python
"""Copy a trained demo run into the package (esn_lens/assets/demo) with a small FLAC clip set, and measure it.

identification split: clips of training speakers; unseen split: clips of held-out speakers.
Writes esn_lens/assets/demo/metrics.json with the numbers measured on exactly the shipped files.

Example: python scripts/demo_ship.py --run /tmp/demo/r1 --train /tmp/demo/train --unseen /tmp/demo/unseen
"""
from __future__ import annotations

import argparse
import csv
import json
import random
import shutil
from pathlib import Path

import soundfile as sf
import torch

from esn_lens.demo_model import ASSETS, DEMO_EMOTIONS, demo_clips, load_demo_model, read_manifest


def write_split(clips, dest: Path) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    with open(dest / "manifest.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["path", "emotion", "speaker", "utterance_id", "text"])
        for c in clips:
            x, sr = sf.read(str(c.path), dtype="int16")
            rel = f"{c.utterance_id}.flac"
            sf.write(dest / rel, x, sr, subtype="PCM_16", format="FLAC")
            w.writerow([rel, c.emotion, c.speaker, c.utterance_id, c.text])


def pick(clips, per_emotion: int, seed: int):
    rng = random.Random(seed)
    out = []
    for e in DEMO_EMOTIONS:
        by_spk: dict[str, list] = {}
        for c in clips:
            if c.emotion == e:
                by_spk.setdefault(c.speaker, []).append(c)
        spks = sorted(by_spk)
        for lst in by_spk.values():
            rng.shuffle(lst)
        i = 0
        while sum(1 for c in out if c.emotion == e) < per_emotion:  # round-robin over speakers
            lst = by_spk[spks[i % len(spks)]]
            if lst:
                out.append(lst.pop())
            i += 1
    return sorted(out, key=lambda c: c.utterance_id)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--run", required=True)
    p.add_argument("--train", required=True)
    p.add_argument("--unseen", required=True)
    p.add_argument("--ident-per-emotion", type=int, default=40)
    p.add_argument("--unseen-per-emotion", type=int, default=48)
    p.add_argument("--top-frac", type=float, default=0.02)
    a = p.parse_args()
    torch.set_num_threads(1)
    model_dst = ASSETS / "model"
    if model_dst.exists():
        shutil.rmtree(model_dst)
    shutil.copytree(Path(a.run) / "model", model_dst)
    if (Path(a.run) / "train_info.json").is_file():
        shutil.copy(Path(a.run) / "train_info.json", ASSETS / "train_info.json")
    write_split(pick(read_manifest(a.train), a.ident_per_emotion, 0), ASSETS / "clips" / "identification")
    write_split(pick(read_manifest(a.unseen), a.unseen_per_emotion, 1), ASSETS / "clips" / "unseen")

    from esn_lens.demo_model import deactivation_effects, identification_stats, steering_shares, constrained_accuracy
    from esn_lens.lens import Lens
    from esn_lens.selectors import find_neurons

    model, proc = load_demo_model()
    lens = Lens(model, proc)
    ident, unseen = demo_clips("identification"), demo_clips("unseen")
    stats, pool = identification_stats(lens, ident)
    sets = {n: find_neurons(stats, n, top_frac=a.top_frac) for n in ("conact", "mad", "random", "lap", "lape")}
    sets |= {f"random_seed{s}": find_neurons(stats, "random", top_frac=a.top_frac, seed=s) for s in (1, 2)}
    res = {"top_frac": a.top_frac, "budget_units": int(sets["random"].masks[0].sum()),
           "units_per_emotion": {n: ns.counts for n, ns in sets.items()},
           "pool_per_emotion": len(pool) // len(DEMO_EMOTIONS),
           "ident_acc": constrained_accuracy(lens, ident),
           "effects": deactivation_effects(lens, unseen, sets),
           "steer_conact": steering_shares(lens, unseen, sets["conact"]),
           "steer_mad": steering_shares(lens, unseen, sets["mad"]),
           "steer_random": steering_shares(lens, unseen, sets["random"])}
    res["unseen_acc"] = res["effects"]["base"]
    from esn_lens.demo_model import per_class_accuracy, predict
    from esn_lens.interventions import deactivate

    off = predict(lens, unseen, {"off": [deactivate(torch.ones(lens.n_layers, lens.d_mlp, dtype=torch.bool))]})
    res["all_mlp_off_acc"] = per_class_accuracy(off["off"], unseen)
    (ASSETS / "metrics.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
