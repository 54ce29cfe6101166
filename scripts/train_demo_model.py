#!/usr/bin/env python
"""Train the shipped demo LALM: a tiny real Qwen2AudioForConditionalGeneration on the synthetic corpus.

The user turn is the audio plus the SER prompt of ``esn_lens.prompts.build_prompt`` (options shuffled per
clip); the assistant's answer is the emotion word, one token. Training runs the model's own modules
(audio tower, projector, decoder, lm_head) on the processor's inputs, with the log-mel features cut
after each clip's valid frames (the audio tower masks padded frames, so this is exact; checked against
the full 3000-frame forward at the end). See docs/demo_model.md for the choices and their numbers.

Run time (2-core CPU, torch.set_num_threads(1)): the shipped configuration trains in ~4-6 minutes.
``--smoke`` trains a few steps on a tiny freshly synthesised corpus (< 60 s) for CI.

Example::

    python scripts/train_demo_model.py --corpus /tmp/demo/train --unseen /tmp/demo/unseen --out /tmp/demo/run1
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from esn_lens.lens import Lens
from esn_lens.training import collate_cut_features, cut_feature_examples, shuffled_batches, warmup_cosine
from esn_lens.demo_check import evaluate_demo
from esn_lens.demo_model import DEMO_EMOTIONS, demo_prompt, read_manifest
from esn_lens.testing.tiny import build_tiny

EMOTIONS: tuple[str, ...] = DEMO_EMOTIONS  # set from --emotions
PAD_FRAMES = 8  # feature frames kept after a clip's last valid frame (conv receptive field is 3)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", help="training corpus folder (manifest.csv); synthesised when absent")
    p.add_argument("--unseen", help="held-out-speaker corpus folder for the evaluation")
    p.add_argument("--out", required=True, help="output folder (save_pretrained of model + processor)")
    p.add_argument("--emotions", default=",".join(DEMO_EMOTIONS), help="comma-separated emotion classes")
    p.add_argument("--recipes", choices=("default", "demo"), default="demo",
                   help="recipe book when the corpus is synthesised here: the library's RECIPES or DEMO_RECIPES "
                        "(the shipped model's; rendered with DEMO_DIFFICULTY and, with --null-class, its plain clips)")
    p.add_argument("--intensity", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                   help="when the corpus is synthesised here: each clip's emotional intensity drawn uniformly from "
                        "[LOW, HIGH] (esn_lens.data.synthetic.scale_recipe); default: every clip at full intensity")
    p.add_argument("--null-class", default=None,
                   help="corpus label of clips without emotional colouring (e.g. 'plain'): trained toward a uniform "
                        "answer over the emotion words, so that no emotion is the model's default (each must be "
                        "signalled by evidence); never used for identification or evaluation")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--d-mlp", type=int, default=256)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--kv-heads", type=int, default=1)
    p.add_argument("--enc-hidden", type=int, default=64)
    p.add_argument("--freeze-encoder", action="store_true", help="keep the (random) audio encoder fixed")
    p.add_argument("--l1", type=float, default=0.0, help="L1 penalty on the MLP act_fn outputs (mean |g|)")
    p.add_argument("--mlp-necessity", type=float, default=0.0,
                   help="weight of an auxiliary loss: with every decoder MLP zeroed the answer must be uniform "
                        "over the emotion words (removes the attention-only shortcut)")
    p.add_argument("--act", default=None, help="decoder MLP activation (the Qwen2 config's hidden_act), e.g. relu")
    p.add_argument("--fire-weight", type=float, default=0.0,
                   help="weight of a firing-rate penalty: per unit, relu(mean sigmoid(k*gate) - target) over the "
                        "valid decoder positions")
    p.add_argument("--fire-target", type=float, default=0.05)
    p.add_argument("--fire-k", type=float, default=4.0, help="sharpness of the soft firing indicator sigmoid(k*gate)")
    p.add_argument("--selectivity", type=float, default=0.0,
                   help="weight of a class-selectivity regulariser (Leavitt & Morcos 2020) on the units' soft "
                        "firing rates: -mean over units of (top - rest) / (top + rest), top = the highest "
                        "per-emotion rate in the batch, rest = the mean of the others")
    p.add_argument("--selectivity-rest", choices=("mean", "second"), default="mean",
                   help="what the top emotion's rate is compared with: the mean of the other emotions' rates "
                        "(Leavitt & Morcos) or the runner-up's (also discourages units shared by two emotions)")
    p.add_argument("--assign-units", action="store_true",
                   help="with --selectivity: give every unit an emotion in advance (unit index mod the number of "
                        "emotions, in every layer) and contrast its firing on that emotion's clips with the rest, "
                        "instead of on its own top emotion; every emotion then gets an equal share of units "
                        "(the selectors are not told the assignment)")
    p.add_argument("--selectivity-weighting", choices=("uniform", "rate"), default="uniform",
                   help="average the units' selectivity uniformly, or weighted by their firing rate (then a unit "
                        "that fires for every emotion costs in proportion to how much it fires)")
    p.add_argument("--probe", type=float, default=0.0,
                   help="weight of an auxiliary emotion probe (training only, not saved) that reads the clip's "
                        "mean MLP unit activations through non-negative weights: every emotion must be told by "
                        "positive evidence from some units (deep supervision)")
    p.add_argument("--epochs", type=float, default=12)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--wd", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-clips", type=int, default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--smoke", action="store_true", help="a few steps on a tiny synthesised corpus (CI)")
    p.add_argument("--eval", action="store_true", help="run the ESN evaluation after training")
    p.add_argument("--top-frac", type=float, default=0.02)
    p.add_argument("--cache", action="store_true", help="cache the prepared inputs next to the corpus")
    args = p.parse_args(argv)
    if args.assign_units and args.selectivity <= 0:
        p.error("--assign-units shapes the selectivity regulariser: give --selectivity WEIGHT > 0 as well")
    if args.intensity and not 0.0 <= args.intensity[0] <= args.intensity[1] <= 1.0:
        p.error(f"--intensity LOW HIGH must satisfy 0 <= LOW <= HIGH <= 1, got {args.intensity[0]} {args.intensity[1]}")
    return args


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ------------------------------------------------------------------------------------------ data
# ------------------------------------------------------------------------------------------ forward
def selectivity_index(per_clip: torch.Tensor, y: torch.Tensor, n_emotions: int, *, rest: str = "mean",
                      assigned: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Class selectivity (Leavitt & Morcos 2020) of every unit in a batch: ``(top - rest) / (top + rest)``.

    ``per_clip`` (batch, units): each clip's soft firing rate per unit; ``y`` (batch,): emotion index, -1 for
    null-class clips (left out). Per emotion present in the batch, the mean rate ``cls`` (present, units).
    ``top`` is the unit's highest class rate, or with ``assigned`` (units,) the rate of the emotion given to the
    unit in advance (0 when that emotion is absent from the batch); ``rest`` the mean of the other present
    emotions' rates (``"mean"``) or the runner-up's (``"second"``, without ``assigned``). Returns the
    selectivity (units,) and each unit's mean class rate (units,), the weights of ``--selectivity-weighting
    rate``. Example: one unit firing .8 on angry clips and 0 on sad ones has selectivity ~1.
    """
    lab = y >= 0
    onehot = F.one_hot(y.clamp(min=0), n_emotions).float() * lab[:, None]
    counts = onehot.sum(0)
    present = counts > 0
    full = (onehot.T @ per_clip) / counts.clamp(min=1)[:, None]  # (emotions, units); 0 for absent emotions
    cls = full[present]
    n_present = int(present.sum())
    if assigned is not None:
        top = full.gather(0, assigned[None])[0]
        others = (cls.sum(0) - top) / max(1, n_present - 1) * present[assigned].float()
    else:
        top = cls.max(0).values
        if rest == "second" and n_present > 1:
            others = cls.topk(2, dim=0).values[1]
        else:
            others = (cls.sum(0) - top) / max(1, n_present - 1)
    return (top - others) / (top + others + 1e-4), cls.mean(0)


# ------------------------------------------------------------------------------------------ training
def train(args) -> dict:
    global EMOTIONS
    EMOTIONS = tuple(e.strip() for e in args.emotions.split(",") if e.strip())
    torch.set_num_threads(args.threads)
    set_seed(args.seed)
    t_start = time.perf_counter()
    tmp = None
    corpus = args.corpus
    if corpus is None or not Path(corpus, "manifest.csv").is_file():
        from esn_lens.data.synthetic import DEMO_DIFFICULTY, DEMO_RECIPES, generate_corpus

        if corpus is None:
            tmp = tempfile.TemporaryDirectory()
            corpus = tmp.name
        n, spk = (3, 4) if args.smoke else (20, 32)
        kw = dict(recipes=DEMO_RECIPES, difficulty=DEMO_DIFFICULTY) if args.recipes == "demo" else {}
        names = EMOTIONS + ((args.null_class,) if args.null_class else ())
        if args.intensity:
            kw["intensity"] = tuple(args.intensity)
        generate_corpus(corpus, n_per_emotion_per_speaker=n, speakers=spk, emotions=names, seed=args.seed, **kw)
    if args.null_class in EMOTIONS:
        raise SystemExit(f"--null-class {args.null_class!r} is one of the emotions {EMOTIONS}; "
                         "expected a corpus label that is not an emotion (e.g. 'plain')")
    clips = [c for c in read_manifest(corpus) if c.emotion in EMOTIONS or c.emotion == args.null_class]
    if args.null_class and not any(c.emotion == args.null_class for c in clips):
        raise SystemExit(f"--null-class {args.null_class!r}: no clip of {corpus} has that label; "
                         f"labels there: {sorted({c.emotion for c in read_manifest(corpus)})}")
    if args.max_clips:
        clips = random.Random(args.seed).sample(clips, min(args.max_clips, len(clips)))

    model, proc = build_tiny("qwen2_audio", seed=args.seed, n_layers=args.layers, hidden=args.hidden,
                             d_mlp=args.d_mlp, heads=args.heads, kv_heads=args.kv_heads,
                             encoder_hidden=args.enc_hidden, extra_words=list(EMOTIONS))
    if args.act:
        from transformers.activations import ACT2FN

        model.config.text_config.hidden_act = args.act
        for layer in model.model.language_model.layers:
            layer.mlp.act_fn = ACT2FN[args.act]
    lens = Lens(model, proc)
    tok = proc.tokenizer
    target_ids = torch.tensor([tok.convert_tokens_to_ids(e) for e in EMOTIONS])
    t0 = time.perf_counter()
    tag = "-".join(EMOTIONS + ((f"null={args.null_class}",) if args.null_class else ()))  # labels depend on the classes
    cache = Path(corpus) / f".prepared_{len(clips)}_{args.max_clips}_{args.seed}_{tag}.pt"
    if args.cache and cache.is_file():
        data = torch.load(cache)
    else:
        data = cut_feature_examples(  # y = -1: the null class
            lens, clips, [demo_prompt(c.utterance_id, EMOTIONS) for c in clips],
            [EMOTIONS.index(c.emotion) if c.emotion in EMOTIONS else -1 for c in clips], pad_frames=PAD_FRAMES,
            feature_dtype=torch.float16)
        if args.cache:
            torch.save(data, cache)
    t_prep = time.perf_counter() - t0

    tower_params = list(model.model.audio_tower.parameters())
    if args.freeze_encoder:
        for p_ in tower_params:
            p_.requires_grad_(False)
        with torch.no_grad():  # encode once: the tower is fixed
            for s in range(0, len(data), 64):
                items = data[s:s + 64]
                _, _, feats, flen, _ = collate_cut_features(items, tok.pad_token_id)
                enc, out_len = lens.adapter.encode_cut_features(feats, flen)
                for i, it in enumerate(items):
                    it["enc"] = enc[i, :int(out_len[i])].clone()

    # every regulariser reads the decoder MLPs' (gate, act) pairs, recorded by one hook per layer
    record: list[tuple[torch.Tensor, torch.Tensor]] = []
    hooks = []
    if args.l1 > 0 or args.fire_weight > 0 or args.selectivity > 0 or args.probe > 0:
        for layer in model.model.language_model.layers:
            hooks.append(layer.mlp.act_fn.register_forward_hook(lambda m, i, o: record.append((i[0], o))))
    probe_w = probe_b = None
    if args.probe > 0:
        probe_w = torch.nn.Parameter(torch.full((args.layers * args.d_mlp, len(EMOTIONS)), -3.0))
        probe_b = torch.nn.Parameter(torch.zeros(len(EMOTIONS)))

    # --assign-units: unit i of every layer is given emotion i mod E (flattened over layers like per_clip)
    assigned = ((torch.arange(args.layers * args.d_mlp) % args.d_mlp) % len(EMOTIONS)) if args.assign_units else None
    params = [p_ for p_ in model.parameters() if p_.requires_grad]
    opt = torch.optim.AdamW(params + ([probe_w, probe_b] if probe_w is not None else []), lr=args.lr,
                            weight_decay=args.wd)
    steps_per_epoch = math.ceil(len(data) / args.batch)
    total = 6 if args.smoke else max(1, int(args.epochs * steps_per_epoch))
    warm = min(50, total // 10 + 1)
    sched = warmup_cosine(opt, warm, total)
    model.train()
    step, log = 0, []
    t0 = time.perf_counter()
    for idx in shuffled_batches(len(data), args.batch, total, seed=args.seed):
        items = [data[i] for i in idx]
        ids, am, feats, flen, y = collate_cut_features(items, tok.pad_token_id)
        if args.freeze_encoder:
            T = max(len(it["enc"]) for it in items)
            enc = torch.zeros(len(items), T, items[0]["enc"].shape[-1])
            for i, it in enumerate(items):
                enc[i, :len(it["enc"])] = it["enc"]
            out_len = torch.tensor([len(it["enc"]) for it in items])
        else:
            enc, out_len = lens.adapter.encode_cut_features(feats, flen)
        record.clear()
        logits = lens.adapter.last_logits_from_audio(ids, am, enc, out_len)
        lab = y >= 0  # null-class clips (y = -1) are trained toward a uniform answer over the emotion words
        ce = F.cross_entropy(logits[lab], target_ids[y[lab]]) * lab.float().mean() if lab.any() else logits.sum() * 0
        if not lab.all():
            ce = ce - F.log_softmax(logits[~lab][:, target_ids], -1).mean() * (~lab).float().mean()
        loss = ce
        l1 = torch.zeros(())
        hard = float("nan")
        if record:
            gate = torch.stack([g for g, _ in record], 2)  # (B, S, layer, d_mlp)
            act = torch.stack([o for _, o in record], 2)
            valid = am.float()[:, :, None, None]
            n_valid = valid.sum(1)  # (B, 1, 1)
            if args.l1 > 0:
                l1 = (act.abs() * valid).sum() / (n_valid.sum() * act.shape[-1] * act.shape[-2])
                loss = loss + args.l1 * l1
            soft = torch.sigmoid(args.fire_k * gate) * valid  # soft firing indicator
            if args.fire_weight > 0:
                rate = soft.sum((0, 1)) / n_valid.sum()  # (layer, d_mlp)
                loss = loss + args.fire_weight * F.relu(rate - args.fire_target).mean()
            if args.selectivity > 0:
                per_clip = (soft.sum(1) / n_valid).flatten(1)  # (B, layer * d_mlp)
                si, w = selectivity_index(per_clip, y, len(EMOTIONS), rest=args.selectivity_rest, assigned=assigned)
                if args.selectivity_weighting == "rate":
                    loss = loss + args.selectivity * (w * (1 - si)).sum() / (w.sum() + 1e-6)
                else:
                    loss = loss - args.selectivity * si.mean()
            if probe_w is not None:
                pooled = ((act * valid).sum(1) / n_valid).flatten(1)  # (B, layer * d_mlp)
                loss = loss + args.probe * F.cross_entropy((pooled @ F.softplus(probe_w) + probe_b)[lab], y[lab])
            with torch.no_grad():
                hard = float(((gate > 0).float() * valid).sum() / (n_valid.sum() * gate.shape[-1] * gate.shape[-2]))
        if args.mlp_necessity > 0:
            zero = [layer.mlp.act_fn.register_forward_hook(lambda m, i, o: o * 0)
                    for layer in model.model.language_model.layers]
            lg0 = lens.adapter.last_logits_from_audio(ids, am, enc, out_len)[:, target_ids]
            for h in zero:
                h.remove()
            record.clear()
            loss = loss - args.mlp_necessity * F.log_softmax(lg0, -1).mean()  # CE to uniform
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        acc = float((logits[lab][:, target_ids].argmax(1) == y[lab]).float().mean())
        log.append((ce.item(), float(l1.detach()), acc, hard))
        step += 1
        if step % max(1, steps_per_epoch // 2) == 0 or step == total:
            m = np.mean(log[-steps_per_epoch:], axis=0)
            print(f"step {step}/{total} ep {step / steps_per_epoch:.1f} ce {m[0]:.3f} l1 {m[1]:.4f} "
                  f"acc {m[2]:.3f} fire {m[3]:.3f} {time.perf_counter() - t0:.0f}s", flush=True)
    for h in hooks:
        h.remove()
    model.eval()
    t_train = time.perf_counter() - t0

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out / "model")
    proc.save_pretrained(out / "model")

    # exactness check: the cut-feature training forward equals the real 3000-frame forward (Lens)
    chk = clips[:4]
    with torch.no_grad():
        ids, am, feats, flen, y = collate_cut_features(data[:4], tok.pad_token_id)
        enc, out_len = lens.adapter.encode_cut_features(feats, flen)
        mine = lens.adapter.last_logits_from_audio(ids, am, enc, out_len)
    b = lens.batch([c.load(16000)[0] for c in chk], [demo_prompt(c.utterance_id, EMOTIONS) for c in chk], sampling_rate=16000)
    ref = lens.run(b).logits
    max_diff = float((mine - ref).abs().max())
    print(f"training forward vs Lens forward: max |diff| = {max_diff:.2e}")

    info = dict(vars(args), clips=len(data), prep_s=round(t_prep, 1), train_s=round(t_train, 1), steps=total,
                final_train=np.mean(log[-steps_per_epoch:], axis=0).round(4).tolist(), check_max_diff=max_diff,
                total_s=round(time.perf_counter() - t_start, 1))
    if args.eval and args.unseen:
        info["eval"] = evaluate_demo(lens, [c for c in clips if c.emotion in EMOTIONS],
                                [c for c in read_manifest(args.unseen) if c.emotion in EMOTIONS], args.top_frac,
                                     emotions=EMOTIONS)
    (out / "train_info.json").write_text(json.dumps(info, indent=1))
    if tmp is not None:
        tmp.cleanup()
    return info


if __name__ == "__main__":
    info = train(parse_args())
    print(json.dumps({k: v for k, v in info.items() if k != "eval"}, default=str))
    sys.exit(0)
