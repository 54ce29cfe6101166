#!/usr/bin/env python
"""Train the real-parts model's projector: Whisper tiny.en encoder (frozen) -> MLP projector (trained) ->
SmolLM2-135M-Instruct (frozen), on the synthetic emotional speech corpus (``esn_lens.real_model``,
docs/real_model.md).

Loss: plain cross entropy of the emotion word's first token at the answer position among the four emotion
words' first tokens (the constrained scoring the demos are evaluated with; as the toy-encoder real demo was
trained), with the library's SER prompt (options shuffled per clip). No regulariser. The frozen encoder's output
is computed once per clip (``--cache``: reused across seeds); each step runs projector -> decoder -> head and
back-propagates to the projector only. Seeded; one thread.

Example::

    python scripts/train_real_model.py --corpus /tmp/rm/train --cache /tmp/rm/enc.pt --out /tmp/rm/seed0 --seed 0
"""
from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from esn_lens.demo_model import DEMO_EMOTIONS, constrained_accuracy, demo_clips, demo_prompt, read_manifest
from esn_lens.lens import Lens
from esn_lens.real_demo import build_processor, load_smollm2
from esn_lens.real_model import FEATURES, assemble_real, save_projector
from esn_lens.training import collate_cut_features, cut_feature_examples, shuffled_batches, warmup_cosine

EMOTIONS = DEMO_EMOTIONS


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", required=True, help="training corpus folder; synthesised there when it has no manifest")
    p.add_argument("--per-speaker", type=int, default=4, help="clips per emotion per speaker when synthesising")
    p.add_argument("--speakers", type=int, default=32)
    p.add_argument("--cache", help="file of the frozen encoder's outputs (written once, reused)")
    p.add_argument("--out", required=True)
    p.add_argument("--projector", choices=("mlp", "linear"), default="mlp")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--wd", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--init", default=None, help="start from the projector saved in this folder (a further stage)")
    p.add_argument("--shuffle-seed", type=int, default=None, help="batch order seed (default: --seed)")
    p.add_argument("--eval", type=int, default=144, help="unseen clips scored at the end (0: none)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                   help="frozen encoder + decoder dtype; bfloat16 keeps the trained projector in float32 (its master "
                        "copy: AdamW steps in float32; its output is cast to bfloat16 for the decoder)")
    return p.parse_args(argv)


def encoder_outputs(lens, data, batch=16):
    """Each item's frozen-encoder output (tokens x 384, float16), added in place as ``item['enc']``."""
    with torch.no_grad():
        for s in range(0, len(data), batch):
            items = data[s:s + batch]
            _, _, feats, flen, _ = collate_cut_features(items, 0)
            enc, n = lens.adapter.encode_cut_features(feats, flen)
            for i, it in enumerate(items):
                it["enc"] = enc[i, :int(n[i])].to(torch.float16).clone()
                del it["feats"]


def collate(items, pad_id):
    S = max(len(it["ids"]) for it in items)
    T = max(it["enc"].shape[0] for it in items)
    ids = torch.full((len(items), S), pad_id, dtype=torch.long)
    am = torch.zeros(len(items), S, dtype=torch.long)
    enc = torch.zeros(len(items), T, items[0]["enc"].shape[1])
    for i, it in enumerate(items):
        n = len(it["ids"])
        ids[i, S - n:], am[i, S - n:] = it["ids"], 1
        enc[i, :it["enc"].shape[0]] = it["enc"].float()
    return ids, am, enc, torch.tensor([it["enc"].shape[0] for it in items]), torch.tensor([it["y"] for it in items])


def main(args):
    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    t_start = time.perf_counter()
    corpus = Path(args.corpus)
    if not (corpus / "manifest.csv").is_file():
        from esn_lens.data.synthetic import DEMO_DIFFICULTY, DEMO_INTENSITY, DEMO_RECIPES, generate_corpus

        r = generate_corpus(corpus, n_per_emotion_per_speaker=args.per_speaker, speakers=args.speakers,
                            emotions=EMOTIONS, seed=0, recipes=DEMO_RECIPES, difficulty=DEMO_DIFFICULTY,
                            intensity=DEMO_INTENSITY)
        print(f"corpus: {r['clips']} clips in {r['seconds']:.0f}s", flush=True)
    clips = [c for c in read_manifest(corpus) if c.emotion in EMOTIONS]
    lm, tok = load_smollm2()
    proc = build_processor(tok, FEATURES)
    model = assemble_real(lm, proc, args.projector, seed=args.seed)
    del lm
    stages = []
    if args.init:
        from safetensors.torch import load_file

        model.load_state_dict(load_file(f"{args.init}/projector.safetensors"), strict=False)
        stages = json.loads(Path(args.init, "real_model.json").read_text()).get("stages", [])
    lens = Lens(model, proc)
    target_ids = torch.tensor([tok(e, add_special_tokens=False).input_ids[0] for e in EMOTIONS])
    t0 = time.perf_counter()
    if args.cache and Path(args.cache).is_file():
        data = torch.load(args.cache)
    else:
        data = cut_feature_examples(lens, clips, [demo_prompt(c.utterance_id) for c in clips],
                                    [EMOTIONS.index(c.emotion) for c in clips], pad_frames=4)
        encoder_outputs(lens, data)
        if args.cache:
            torch.save(data, args.cache)
    t_prep = time.perf_counter() - t0
    if args.dtype == "bfloat16":  # after the cache: the encoder's outputs stay the float32 tower's
        model.to(torch.bfloat16)
        model.model.multi_modal_projector.float()
    print(f"{len(data)} clips ready in {t_prep:.0f}s; tokens/clip {np.mean([len(d['ids']) for d in data]):.1f} "
          f"(audio {np.mean([d['enc'].shape[0] for d in data]):.1f})", flush=True)

    params = [p_ for p_ in model.parameters() if p_.requires_grad]
    print(f"trainable parameters: {sum(p_.numel() for p_ in params):,} ({args.projector} projector)", flush=True)
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.wd)
    spe = math.ceil(len(data) / args.batch)
    total = max(1, int(args.epochs * spe))
    sched = warmup_cosine(opt, min(40, total // 10 + 1), total)
    model.eval()  # no dropout anywhere; the frozen parts stay as loaded
    log, t0 = [], time.perf_counter()
    for step, idx in enumerate(shuffled_batches(len(data), args.batch, total,
                                                     seed=args.seed if args.shuffle_seed is None else args.shuffle_seed), 1):
        ids, am, enc, n_tok, y = collate([data[i] for i in idx], tok.pad_token_id)
        logits = lens.adapter.last_logits_from_audio(ids, am, enc, n_tok)
        logits = logits.float()
        loss = F.cross_entropy(logits[:, target_ids], y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        log.append((loss.item(), float((logits[:, target_ids].argmax(1) == y).float().mean())))
        if step % max(1, spe // 8) == 0 or step == total:
            m = np.mean(log[-max(1, spe // 8):], axis=0)
            print(f"step {step}/{total} ep {step / spe:.2f} ce {m[0]:.3f} acc4 {m[1]:.3f} "
                  f"{time.perf_counter() - t0:.0f}s", flush=True)
    t_train = time.perf_counter() - t0
    info = dict(vars(args), clips=len(data), speakers_train=len({c.speaker for c in clips}), prep_s=round(t_prep, 1),
                train_s=round(t_train, 1), steps=total, loss="cross entropy over the four emotion words' first tokens",
                final_train=np.mean(log[-spe:], axis=0).round(4).tolist(), torch_threads=args.threads)
    save_projector(model, args.out, args.projector, {"train_info": info, "stages": stages + [info]})
    if args.eval:
        t0 = time.perf_counter()
        unseen = demo_clips("unseen")[:: max(1, 144 // args.eval)]
        info["unseen_acc"] = constrained_accuracy(lens, unseen, batch_size=8)
        info["unseen_n"] = len(unseen)
        info["unseen_eval_s"] = round(time.perf_counter() - t0, 1)
    info["total_s"] = round(time.perf_counter() - t_start, 1)
    print(json.dumps(info, default=str), flush=True)
    save_projector(model, args.out, args.projector, {"train_info": info, "stages": stages + [info]})
    return info


if __name__ == "__main__":
    main(parse_args())
