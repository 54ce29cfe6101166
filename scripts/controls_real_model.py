#!/usr/bin/env python
"""Three controls the paper does not have, on the real-parts model (Whisper tiny.en + SmolLM2-135M):

1. **Voice or words?** Every unseen emotional clip has a neutral twin: the same speaker saying the same sentence
   with neutral prosody. Mean activation of each emotion's selected units on that emotion's clips vs on their
   neutral twins (and the same for random units): units that follow the voice are higher on the emotional clip.
2. **Transcript alone.** The decoder gets the clip's sentence as text (no audio) with the same SER question;
   constrained accuracy (the sentences are lexically neutral, so chance is expected).
3. **Where the units act.** Deactivation of each selected set at the audio positions only vs at all positions.

Uses the neuron sets saved by ``scripts/eval_real_demo.py --real-model --save-sets DIR``. Example::

    python scripts/controls_real_model.py --sets /tmp/rm/sets --out /tmp/rm/controls.json --n 6
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import random
import time

import numpy as np
import torch

from esn_lens.demo_model import DEMO_EMOTIONS, demo_clips, demo_evaluator, demo_prompt
from esn_lens.evaluate import deactivation_conditions, find_result
from esn_lens.interventions import Condition
from esn_lens.lens import Lens
from esn_lens.neurons import NeuronSet
from esn_lens.real_model import load_real_model

E = DEMO_EMOTIONS


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="projector folder (default: the shipped one)")
    p.add_argument("--sets", required=True, help="folder of <selector>_<budget>.safetensors")
    p.add_argument("--budget", default="0.01")
    p.add_argument("--selectors", default="lap,lape,mad,conact,atp,random0")
    p.add_argument("--n", type=int, default=6, help="unseen clips per emotion")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    R: dict = {"timings": {}}
    model, proc = load_real_model(a.model)
    lens = Lens(model, proc)
    tok = proc.tokenizer
    sels = [s for s in a.selectors.split(",") if s]
    sets = {s: NeuronSet.load(f"{a.sets}/{s}_{float(a.budget):g}.safetensors") for s in sels}
    unseen = demo_clips("unseen")
    clips = [c for e in E for c in random.Random(0).sample([c for c in unseen if c.emotion == e], a.n)]

    # 1. neutral twins: same speaker, same sentence, neutral voice
    t0 = time.perf_counter()
    neutral = {(c.speaker, c.text): c for c in unseen if c.emotion == "neutral"}
    emo = [c for c in clips if c.emotion != "neutral" and (c.speaker, c.text) in neutral]
    twins = [dataclasses.replace(neutral[(c.speaker, c.text)], emotion=c.emotion) for c in emo]  # labelled as partner
    kw = dict(batch_size=4, progress=False)
    s_emo = lens.collect_stats(emo, [demo_prompt(c.utterance_id) for c in emo], E, **kw)
    s_twin = lens.collect_stats(twins, [demo_prompt(c.utterance_id) for c in twins], E, **kw)
    m_emo = s_emo.sum / s_emo.T.clamp(min=1)[:, None, None]
    m_twin = s_twin.sum / s_twin.T.clamp(min=1)[:, None, None]
    R["twins"] = {"pairs": len(emo), "per_emotion": {}}
    for s, ns in sets.items():
        row = {}
        for i, e in enumerate(E):
            if e == "neutral" or e not in ns.emotions or not int(ns[e].sum()):
                continue
            mask = ns[e].bool()
            row[e] = {"emotional": float(m_emo[i][mask].mean()), "neutral_twin": float(m_twin[i][mask].mean()),
                      "units": int(mask.sum())}
        R["twins"]["per_emotion"][s] = row
    R["timings"]["twins_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(R["twins"]), flush=True)

    # 2. the transcript alone, no audio
    t0 = time.perf_counter()
    target = torch.tensor([tok(e, add_special_tokens=False).input_ids[0] for e in E])
    pred = []
    with torch.no_grad():
        for c in clips:
            msg = [{"role": "user", "content": f'The speaker said: "{c.text}"\n{demo_prompt(c.utterance_id)}'}]
            ids = tok.apply_chat_template(msg, add_generation_prompt=True, return_tensors="pt", return_dict=True)
            logits = model(input_ids=ids["input_ids"]).logits[0, -1, target]
            pred.append(E[int(logits.argmax())])
    y = [c.emotion for c in clips]
    R["text_only"] = {"clips": len(clips), "accuracy": float(np.mean([p_ == t for p_, t in zip(pred, y)])),
                      "per_class": {e: float(np.mean([p_ == e for p_, t in zip(pred, y) if t == e])) for e in E},
                      "answer_shares": {e: pred.count(e) / len(pred) for e in E}}
    R["timings"]["text_only_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(R["text_only"]), flush=True)

    # 3. deactivation at audio positions only vs all positions
    t0 = time.perf_counter()
    ev = demo_evaluator(lens, E, 4)
    conds = [Condition("baseline")]
    for s, ns in sets.items():
        conds += deactivation_conditions(ns, name=f"{s}@all")
        conds += deactivation_conditions(ns, name=f"{s}@audio", positions="audio")
    res = ev.run(clips, conds)
    base = res["baseline"].per_class()
    R["positions"] = {"clips": len(clips), "baseline": base}
    for s in sets:
        R["positions"][s] = {}
        for where in ("all", "audio"):
            own = [find_result(res, "deactivate", emotion=e, neurons=f"{s}@{where}").per_class()[e] - base[e] for e in E]
            R["positions"][s][where] = {"own_drop": dict(zip(E, np.round(100 * np.array(own), 1).tolist())),
                                        "SE": float(np.mean(own) * 100)}
    R["timings"]["positions_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(R["positions"]), flush=True)
    with open(a.out, "w") as f:
        json.dump(R, f, indent=1)


if __name__ == "__main__":
    main()
