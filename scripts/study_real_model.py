#!/usr/bin/env python
"""The study of docs/real_model.md on the real-parts model (Whisper tiny.en + SmolLM2-135M, trained projector), in
bfloat16, resumable: every job is cut into chunks of clips and each chunk's predictions are written to
``--out/<job>/chunk_NNN.json`` as soon as they are computed; a rerun skips what is on disk.
``scripts/study_real_summary.py`` turns the folder into metrics.

Jobs (``--jobs``, in this order):

- ``fp32``: baseline on all 144 unseen clips in float32 (the check that bfloat16 matches it);
- ``base``: baseline + every decoder MLP unit off, all 144 unseen clips (bfloat16 from here on);
- ``ident``: identification (the shipped demo's identification clips the model answers correctly, balanced),
  NeuronStats + AtP attribution, every selector's sets at every budget saved under ``sets/``;
- ``deact``: deactivation of LAP, LAPE, MAD, ConAct, AtP and ``--random-seeds`` random sets at every budget
  (``--n-main`` clips per emotion at the first budget, ``--n-extra`` at the others);
- ``steer``: steering (gain 1 + alpha) of every set at the first budget, ``--alphas``, ``--n-steer`` per emotion;
- ``positions``: deactivation at the audio positions only, every set at the first budget, ``--n-ctrl`` per emotion;
- ``twins``: neutral-prosody twins (same speaker, same sentence, neutral recipe; rendered here) of the emotional
  clips among the first ``--n-ctrl`` per emotion: unit activations (emotional clip vs twin), and answers on the
  twins with each partner emotion's units deactivated or steered (alpha 2);
- ``text``: the transcript alone as text (no audio), all 144 clips.

Clip subsets are prefixes of one seeded permutation per emotion, so smaller subsets are inside larger ones.
Example::

    python scripts/study_real_model.py --out /work/study-runs/seed0 --jobs fp32,base,ident,deact,steer
    python scripts/study_real_model.py --model /tmp/rm/seed1 --out /work/study-runs/seed1 --jobs base,ident,deact \\
        --budgets 0.01
"""
from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

import numpy as np
import torch

from esn_lens.demo_model import DEMO_EMOTIONS, demo_clips, demo_evaluator, demo_prompt
from esn_lens.evaluate import deactivation_conditions, steering_conditions
from esn_lens.interventions import Condition, deactivate
from esn_lens.lens import Lens
from esn_lens.neurons import NeuronSet

E = DEMO_EMOTIONS
SELECTORS = ("lap", "lape", "mad", "conact", "atp")


def ordered(clips, n=None):
    """The first ``n`` clips per emotion of one seeded permutation per emotion, interleaved (angry, happy, neutral,
    sad, angry, ...): a smaller subset is a prefix of a larger one, so saved chunks stay valid when n grows."""
    pools = []
    for e in E:
        pool = [c for c in clips if c.emotion == e]
        random.Random(0).shuffle(pool)
        pools.append(pool[:n] if n else pool)
    return [p[i] for i in range(max(map(len, pools))) for p in pools if i < len(p)]


def write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    os.replace(tmp, path)


class Study:
    def __init__(self, a):
        self.a, self.out = a, Path(a.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.timings = json.loads((self.out / "timings.json").read_text()) if (self.out / "timings.json").exists() else {}
        self.model = self.proc = self.lens = None
        self.budgets = [float(b) for b in a.budgets.split(",")]
        self.names = list(SELECTORS) + [f"random{s}" for s in a.random_seeds]

    def log(self, msg):
        print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)

    def time_(self, key, dt, rows=None):
        self.timings[key] = round(self.timings.get(key, 0.0) + dt, 1)
        if rows is not None:
            self.timings[key + "_rows"] = self.timings.get(key + "_rows", 0) + rows
        write_json(self.out / "timings.json", self.timings)

    def load(self, dtype):
        if self.model is None:
            from esn_lens.real_model import load_real_model

            t0 = time.perf_counter()
            self.model, self.proc = load_real_model(self.a.model)
            self.time_("load_s", time.perf_counter() - t0)
        if next(self.model.parameters()).dtype != dtype:
            self.model.to(dtype)
        self.lens = Lens(self.model, self.proc)
        return self.lens

    def run_job(self, name, clips, conds, chunk=None):
        """Evaluate ``conds`` on ``clips`` chunk by chunk; each chunk's predictions written at once."""
        d = self.out / name
        d.mkdir(exist_ok=True)
        specs = {c.name: dict(kind=c.kind, emotion=c.emotion, neurons=c.neurons, alpha=c.alpha) for c in conds}
        write_json(d / "conditions.json", specs)
        chunk = chunk or self.a.chunk
        ev = demo_evaluator(self.lens, E, self.a.batch)
        for k in range(0, len(clips), chunk):
            f = d / f"chunk_{k // chunk:03d}.json"
            if f.exists():
                continue
            part = clips[k:k + chunk]
            t0 = time.perf_counter()
            res = ev.run(part, conds)
            dt = time.perf_counter() - t0
            write_json(f, {"clips": [c.utterance_id for c in part], "labels": [c.emotion for c in part],
                           "seconds": round(dt, 2), "rows": len(part) * len(conds),
                           "pred": {n: r.predictions for n, r in res.items()}})
            self.time_(f"{name}_s", dt, len(part) * len(conds))
            self.log(f"{name} chunk {k // chunk}: {len(part)} clips x {len(conds)} conditions in {dt:.0f}s "
                     f"({1000 * dt / len(part) / len(conds):.0f} ms/row)")

    def sets(self, r):
        return {n: NeuronSet.load(self.out / "sets" / f"{n}_{r:g}.safetensors") for n in self.names}

    # ------------------------------------------------------------------------------------------ jobs
    def job_fp32(self):
        self.load(torch.float32)
        self.run_job("fp32_base", ordered(demo_clips("unseen")), [Condition("baseline")], chunk=36)

    def job_base(self):
        lens = self.load(torch.bfloat16)
        off = Condition("all_mlp_off", [deactivate(torch.ones(lens.n_layers, lens.d_mlp, dtype=torch.bool))])
        self.run_job("base", ordered(demo_clips("unseen")), [Condition("baseline"), off], chunk=36)

    def job_ident(self):
        from esn_lens.attribution import collect_attribution
        from esn_lens.demo_model import identification_stats
        from esn_lens.selectors import find_neurons

        d = self.out / "sets"
        if (d / "done.json").exists():
            return
        lens = self.load(torch.bfloat16)
        t0 = time.perf_counter()
        stats, pool = identification_stats(lens, demo_clips("identification"), emotions=E, batch_size=self.a.batch)
        t1 = time.perf_counter()
        att = collect_attribution(lens, pool, E, evaluator=demo_evaluator(lens, E, self.a.batch),
                                  batch_size=self.a.batch, progress=False)
        t2 = time.perf_counter()
        d.mkdir(exist_ok=True)
        for r in self.budgets:
            for sel in SELECTORS:
                ns = find_neurons(att, "atp", top_frac=r) if sel == "atp" else find_neurons(stats, sel, top_frac=r)
                ns.save(d / f"{sel}_{r:g}.safetensors")
            for s in self.a.random_seeds:
                find_neurons(stats, "random", top_frac=r, seed=s).save(d / f"random{s}_{r:g}.safetensors")
        torch.save({"sum": stats.sum, "T": stats.T}, d / "ident_means.pt")
        self.time_("identification_s", t1 - t0)
        self.time_("attribution_s", t2 - t1)
        write_json(d / "done.json", {"pool_per_emotion": len(pool) // len(E), "pool": [c.utterance_id for c in pool]})
        self.log(f"identification: pool {len(pool)} in {t1 - t0:.0f}s, attribution {t2 - t1:.0f}s")

    def job_deact(self):
        self.load(torch.bfloat16)
        unseen = demo_clips("unseen")
        for k, r in enumerate(self.budgets):
            sets = self.sets(r)
            conds = [Condition("baseline")]
            for n in self.names:
                conds += deactivation_conditions(sets[n], name=n)
            self.run_job(f"deact_{r:g}", ordered(unseen, self.a.n_main if k == 0 else self.a.n_extra), conds)

    def job_steer(self):
        self.load(torch.bfloat16)
        r = self.budgets[0]
        sets = self.sets(r)
        alphas = [float(x) for x in self.a.alphas.split(",")]
        conds = [Condition("baseline")]
        for n in (self.a.steer_sets.split(",") if self.a.steer_sets else self.names):
            conds += steering_conditions(sets[n], alphas, name=n)
        self.run_job(f"steer_{r:g}", ordered(demo_clips("unseen"), self.a.n_steer), conds)

    def job_positions(self):
        self.load(torch.bfloat16)
        r = self.budgets[0]
        sets = self.sets(r)
        conds = [Condition("baseline")]
        for n in self.names[:len(SELECTORS) + 1]:
            conds += deactivation_conditions(sets[n], name=f"{n}@audio", positions="audio")
        self.run_job(f"positions_{r:g}", ordered(demo_clips("unseen"), self.a.n_ctrl), conds)

    def twin_clips(self):
        """Neutral-prosody twins of the emotional clips among the first --n-ctrl per emotion (rendered once)."""
        import soundfile as sf

        from esn_lens.data.clip import EmotionClip
        from esn_lens.data.synthetic.corpus import hash_int, render_clip
        from esn_lens.data.synthetic.recipes import DEMO_DIFFICULTY, DEMO_INTENSITY, DEMO_RECIPES
        from esn_lens.data.synthetic.voices import _Espeak, make_speakers

        d = self.out.parent / "twins_audio"
        d.mkdir(exist_ok=True)
        spk = {s.name: s for s in make_speakers(40, 0)}  # the unseen voices are spk032-039 of seed 0 (checked)
        emo = [c for c in ordered(demo_clips("unseen"), self.a.n_ctrl) if c.emotion != "neutral"]
        twins, es = [], None
        for c in emo:
            j = 1000 + int(c.utterance_id.rsplit("_", 1)[1])
            path = d / f"{c.utterance_id}_twin.wav"
            if not path.exists():
                es = es or _Espeak.get(fresh=True)
                s = spk[c.speaker]
                rng = np.random.default_rng([0, hash_int(s.name), hash_int("neutral"), j])
                level = float(np.random.default_rng([0, hash_int(s.name), hash_int("neutral"), j, 1]).uniform(*DEMO_INTENSITY))
                x = render_clip(es, s, "neutral", c.text, rng, difficulty=DEMO_DIFFICULTY, recipes=DEMO_RECIPES,
                                intensity=level)
                sf.write(path, x, 16000, subtype="PCM_16")
            twins.append(EmotionClip(c.utterance_id, "neutral", path=path, speaker=c.speaker,
                                     corpus="synthetic", text=c.text))
        return emo, twins

    def job_twins(self):
        lens = self.load(torch.bfloat16)
        emo, twins = self.twin_clips()
        r = self.budgets[0]
        sets = self.sets(r)
        f = self.out / "twins_acts.pt"
        if not f.exists():
            t0 = time.perf_counter()
            kw = dict(batch_size=self.a.batch, progress=False)
            part = [dataclass_replace(t, emotion=c.emotion) for c, t in zip(emo, twins)]  # grouped by partner
            s_emo = lens.collect_stats(emo, [demo_prompt(c.utterance_id) for c in emo], E, **kw)
            s_twin = lens.collect_stats(part, [demo_prompt(c.utterance_id) for c in emo], E, **kw)
            torch.save({"emo_sum": s_emo.sum, "emo_T": s_emo.T, "twin_sum": s_twin.sum, "twin_T": s_twin.T}, f)
            self.time_("twins_acts_s", time.perf_counter() - t0, 2 * len(emo))
        for e in E:
            if e == "neutral":
                continue
            idx = [i for i, c in enumerate(emo) if c.emotion == e]
            conds = [Condition("baseline")]
            for n in self.names[:len(SELECTORS) + 1]:
                conds += deactivation_conditions(sets[n], name=n, emotions=[e])
                conds += steering_conditions(sets[n], [2.0], name=n, emotions=[e])
            self.run_job(f"twins_{e}", [twins[i] for i in idx], conds)

    def job_text(self):
        """The transcript alone as text, no audio, with the same SER question (constrained scoring)."""
        f = self.out / "text_only.json"
        if f.exists():
            return
        lens = self.load(torch.bfloat16)
        tok = self.proc.tokenizer
        clips = ordered(demo_clips("unseen"))
        target = torch.tensor([tok(e, add_special_tokens=False).input_ids[0] for e in E])
        t0 = time.perf_counter()
        pred = []
        tok.padding_side = "left"
        with torch.no_grad():
            for s in range(0, len(clips), 16):
                msgs = [[{"role": "user", "content": f'The speaker said: "{c.text}"\n{demo_prompt(c.utterance_id)}'}]
                        for c in clips[s:s + 16]]
                texts = [tok.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m in msgs]
                enc = tok(texts, return_tensors="pt", padding=True)
                logits = lens.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits[:, -1]
                pred += [E[i] for i in logits[:, target].float().argmax(-1).tolist()]
        dt = time.perf_counter() - t0
        write_json(f, {"clips": [c.utterance_id for c in clips], "labels": [c.emotion for c in clips], "pred": pred,
                       "seconds": round(dt, 1)})
        self.time_("text_only_s", dt, len(clips))


def dataclass_replace(c, **kw):
    import dataclasses

    return dataclasses.replace(c, **kw)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="projector folder (default: the shipped one)")
    p.add_argument("--out", required=True, help="state folder (resumable)")
    p.add_argument("--jobs", default="fp32,base,ident,deact,steer,positions,twins,text")
    p.add_argument("--budgets", default="0.01,0.005,0.02", help="first = the main budget")
    p.add_argument("--random-seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2])
    p.add_argument("--alphas", default="1,2,4")
    p.add_argument("--n-main", type=int, default=36, help="clips per emotion at the first budget")
    p.add_argument("--n-extra", type=int, default=12, help="clips per emotion at the other budgets")
    p.add_argument("--n-steer", type=int, default=6)
    p.add_argument("--steer-sets", default=None, help="comma list of the sets steered (default: every set)")
    p.add_argument("--n-ctrl", type=int, default=12)
    p.add_argument("--batch", type=int, default=4, help="clips per forward (x conditions = rows)")
    p.add_argument("--chunk", type=int, default=12, help="clips per saved chunk")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    st = Study(a)
    t0 = time.perf_counter()
    for job in [j for j in a.jobs.split(",") if j]:
        t = time.perf_counter()
        getattr(st, f"job_{job}")()
        st.log(f"job {job} done in {time.perf_counter() - t:.0f}s")
    st.log(f"all done in {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()
