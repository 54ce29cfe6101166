#!/usr/bin/env python
"""Evaluate a trained demo run (its saved model) with the library's own tools: identification stats on
training-speaker clips, deactivation of ConAct/MAD/random/LAP neurons and ConAct steering on unseen speakers.

Example: python scripts/demo_eval.py --run /tmp/demo/r1 --train /tmp/demo/train --unseen /tmp/demo/unseen
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from esn_lens.demo_check import evaluate_demo
from esn_lens.demo_model import DEMO_EMOTIONS, load_demo_model, read_manifest
from esn_lens.lens import Lens

if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--run", required=True)
    p.add_argument("--train", required=True)
    p.add_argument("--unseen", required=True)
    p.add_argument("--top-frac", type=float, default=0.02)
    a = p.parse_args()
    torch.set_num_threads(1)
    model, proc = load_demo_model(Path(a.run) / "model")
    train, unseen = ([c for c in read_manifest(d) if c.emotion in DEMO_EMOTIONS] for d in (a.train, a.unseen))
    res = evaluate_demo(Lens(model, proc), train, unseen, a.top_frac)  # null-class (plain) clips left out
    (Path(a.run) / f"eval_{a.top_frac}.json").write_text(json.dumps(res, indent=1))
