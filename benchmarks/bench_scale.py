"""Benchmark: discovery and a deactivation heatmap sweep on a random-weight Qwen2-Audio-style model.

Shape: the 7B decoder (28 layers, hidden 3584, MLP 18944, 28 heads / 4 KV heads, vocab 156,032) with a
Whisper-large-style audio encoder (32 layers, d_model 1280); ``--scale s`` shrinks widths (and encoder
depth) proportionally for CPUs, ``--layers`` overrides the decoder depth; ``--full`` is the real shape.

Measured, over paired repeated runs (the two variants alternate their order; medians reported):

(a) discovery -- ``lens.collect_stats`` (nnsight trace + float64 statistics on the model's device; with the
    device's default (serial on the CPU, prefetch threads on a GPU), serial, and with the prefetch worker(s)) vs the plain transformers forward of the same batches (no
    nnsight, no statistics); and forward-only on prebuilt batches, the four recorders side by side: esn_lens,
    hand-written torch forward hooks counting on the device, nnsight ``.save()`` of every layer counted on the CPU
    (the published ESN code's pattern), and the plain forward -- all recorders' K are checked equal;
(b) a deactivation heatmap sweep -- ``SEREvaluator.run`` with baseline + E masks (top ``--top-frac`` MAD
    units of the stats from (a)) as batched condition rows with audio-encoder reuse, vs a plain forward
    of the same tiled batch with torch forward hooks applying the same masks (the encoder runs per row).

Both sides include building the batches (feature extraction, tokenisation). Printed: clips/s, the
time ratio esn_lens / plain (median of per-pair ratios), and peak memory (GPU:
``torch.cuda.max_memory_allocated``; CPU: peak RSS from a sampling thread in a separate untimed run).

CPU:  ``python benchmarks/bench_scale.py --scale 0.0625 --clips 8 --batch-size 4``
GPU:  ``python benchmarks/bench_scale.py --device cuda --dtype bfloat16 --full`` (see benchmarks/gpu_bench.sh)
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import statistics
import sys
import threading
import time
from contextlib import contextmanager
from typing import Callable

import numpy as np
import torch

FULL = dict(layers=28, hidden=3584, d_mlp=18944, heads=28, kv_heads=4, vocab=156032,
            enc_layers=32, enc_d=1280, enc_heads=20, enc_ffn=5120)
EMOTIONS = ("neutral", "angry", "happy", "sad", "frustrated", "surprised", "fearful", "disgusted")
#: A compact SER prompt: the tiny byte-level tokenizer spends one token per character, so a short
#: template keeps text length near what the real Qwen tokenizer makes of the paper's prompt (~60-80 tokens).
TEMPLATE = "Emotion? {options}\nAnswer with the number."


def model_shape(args) -> dict:
    if args.full:
        shape = dict(FULL)
    else:
        s = args.scale
        heads = max(1, round(FULL["heads"] * s))
        hidden = max(heads * 8, round(FULL["hidden"] * s / heads) * heads)
        enc_heads = max(1, round(FULL["enc_heads"] * s))
        enc_d = max(enc_heads * 8, round(FULL["enc_d"] * s / enc_heads) * enc_heads)
        shape = dict(layers=FULL["layers"], hidden=hidden, d_mlp=max(8, round(FULL["d_mlp"] * s)), heads=heads,
                     kv_heads=math.gcd(heads, FULL["kv_heads"]), vocab=max(512, round(FULL["vocab"] * s)),
                     enc_layers=max(1, round(FULL["enc_layers"] * s)), enc_d=enc_d, enc_heads=enc_heads,
                     enc_ffn=4 * enc_d)
    if args.layers:
        shape["layers"] = args.layers
    if args.enc_layers:
        shape["enc_layers"] = args.enc_layers
    return shape


def build(shape: dict, device: torch.device, dtype: torch.dtype):
    """A random-weight ``Qwen2AudioForConditionalGeneration`` built directly on ``device`` in ``dtype``."""
    from transformers import (Qwen2AudioConfig, Qwen2AudioForConditionalGeneration, Qwen2AudioProcessor,
                              WhisperFeatureExtractor)

    from esn_lens.testing.tiny import CHAT_TEMPLATE, build_tokenizer

    tok = build_tokenizer()
    cfg = Qwen2AudioConfig(
        audio_config=dict(model_type="qwen2_audio_encoder", num_mel_bins=128, encoder_layers=shape["enc_layers"],
                          encoder_attention_heads=shape["enc_heads"], encoder_ffn_dim=shape["enc_ffn"],
                          d_model=shape["enc_d"]),
        text_config=dict(model_type="qwen2", vocab_size=shape["vocab"], hidden_size=shape["hidden"],
                         intermediate_size=shape["d_mlp"], num_hidden_layers=shape["layers"],
                         num_attention_heads=shape["heads"], num_key_value_heads=shape["kv_heads"],
                         max_position_embeddings=8192, tie_word_embeddings=False),
        audio_token_index=tok.convert_tokens_to_ids("<|AUDIO|>"),
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2AudioForConditionalGeneration._from_config(cfg, dtype=dtype, attn_implementation="sdpa")
    model = model.to(device).eval()  # no-op when built in place; covers any buffer created off-device
    proc = Qwen2AudioProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=128), tokenizer=tok,
                               chat_template=CHAT_TEMPLATE.replace("AUDIO_PLACEHOLDER",
                                                                   "<|audio_bos|><|AUDIO|><|audio_eos|>"))
    return model, proc


def make_clips(n: int, emotions, seconds: float, seed: int = 0):
    from esn_lens.data.clip import EmotionClip
    from esn_lens.testing import tiny_audio

    rng = np.random.default_rng(seed)
    return [EmotionClip(f"b{i}", emotions[i % len(emotions)],
                        audio=tiny_audio(float(seconds * rng.uniform(0.6, 1.4)), freq=float(rng.uniform(120, 300)),
                                         seed=i), sampling_rate=16000) for i in range(n)]


# ---------------------------------------------------------------------- timing and memory
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _trim() -> None:
    """Return freed heap to the OS (glibc), so a run's RSS growth reflects what it needs, not earlier runs."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@contextmanager
def peak_memory(device: torch.device, out: dict, sample_s: float = 0.005):
    """Peak memory of the block: GPU allocated bytes (absolute and over the start), or CPU RSS over the start."""
    if device.type == "cuda":
        sync(device)
        start = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        yield
        sync(device)
        peak = torch.cuda.max_memory_allocated(device)
        out.update(peak_bytes=peak, peak_over_start_bytes=peak - start)
        return
    _trim()
    start = _rss_bytes()
    peak = [start]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            stop.wait(sample_s)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    try:
        yield
    finally:
        stop.set()
        th.join()
        peak[0] = max(peak[0], _rss_bytes())
        out.update(peak_bytes=peak[0], peak_over_start_bytes=peak[0] - start)


def paired(variants: dict[str, Callable[[], object]], repeats: int, device: torch.device) -> dict:
    """Time each variant ``repeats`` times, alternating order per repeat (after one untimed warm-up each)."""
    names = list(variants)
    for nm in names:  # warm-up
        variants[nm]()
        sync(device)
    times: dict[str, list[float]] = {nm: [] for nm in names}
    for r in range(repeats):
        order = names if r % 2 == 0 else names[::-1]
        for nm in order:
            gc.collect()
            sync(device)
            t0 = time.perf_counter()
            variants[nm]()
            sync(device)
            times[nm].append(time.perf_counter() - t0)
    return times


def mem_runs(variants: dict[str, Callable[[], object]], device: torch.device) -> dict[str, dict]:
    out = {}
    for nm, fn in variants.items():
        d: dict = {}
        with peak_memory(device, d):
            fn()
        out[nm] = d
    return out


def summarise(times: dict[str, list[float]], refs: dict[str, str], n_clips: int) -> dict:
    """Medians, clips/s and, for each variant in ``refs``, the median per-pair time ratio to its reference."""
    res = {}
    for nm, ts in times.items():
        med = statistics.median(ts)
        res[nm] = dict(median_s=med, clips_per_s=n_clips / med, times_s=ts)
        if nm in refs:
            res[nm]["ratio_vs_plain"] = statistics.median(a / b for a, b in zip(ts, times[refs[nm]]))
    return res


# ---------------------------------------------------------------------- workloads
def discovery(lens, model, clips, prompt, emotions, batch_size):
    """End to end: ``collect_stats`` vs building the same batches + plain forward; and forward-only on
    prebuilt batches: the traced forward with statistics vs the plain forward."""
    chunks = [clips[i:i + batch_size] for i in range(0, len(clips), batch_size)]
    prebuilt = [lens.batch_clips(ch, prompt) for ch in chunks]

    def esn():
        return lens.collect_stats(clips, prompt, emotions, batch_size=batch_size, progress=False)

    def plain():
        with torch.inference_mode():
            for ch in chunks:
                model(**lens.batch_clips(ch, prompt).inputs)

    def esn_fwd():
        stats = lens.new_stats(emotions)
        for b in prebuilt:
            lens.run(b, stats=stats, emotion_index=stats.emotion_index(b.labels), logits="none")
        return stats

    def plain_fwd():
        with torch.inference_mode():
            for b in prebuilt:
                model(**b.inputs)

    def esn_serial():  # end to end without prefetching (input building in the loop)
        return lens.collect_stats(clips, prompt, emotions, batch_size=batch_size, progress=False, num_workers=0)

    from esn_lens.prefetch import default_workers

    n_prefetch = default_workers("cuda")  # the GPU default: threads building the next batches

    def esn_prefetch():  # end to end with the prefetch worker(s), whatever the device's default
        return lens.collect_stats(clips, prompt, emotions, batch_size=batch_size, progress=False,
                                  num_workers=n_prefetch)

    L, N, E = lens.n_layers, lens.d_mlp, len(emotions)
    dev = lens.adapter.device

    def weights(b):
        idx = torch.tensor([list(emotions).index(x) for x in b.labels])
        onehot = torch.nn.functional.one_hot(idx, E).to(torch.float32)
        return (b.masks.valid.to(torch.float32)[..., None] * onehot[:, None, :]).to(dev)

    def hooks_fwd():  # hand-written torch forward hooks, counts on the device
        K = torch.zeros(E, L, N, dtype=torch.float64, device=dev)
        for b in prebuilt:
            w = weights(b)
            def count(m, i, o, layer, w=w):
                K[:, layer].add_(torch.einsum("bpe,bpn->en", w, (o > 0).to(torch.float32)))  # returns None: output kept

            handles = [lens.adapter.site_module(layer, "act").register_forward_hook(
                lambda m, i, o, layer=layer: count(m, i, o, layer)) for layer in range(L)]
            try:
                with torch.inference_mode():
                    model(**b.inputs)
            finally:
                for h in handles:
                    h.remove()
        return K

    def save_all_fwd():  # the published ESN code's pattern: nnsight .save() of every layer, counted on the CPU
        K = torch.zeros(E, L, N, dtype=torch.float64)
        for b in prebuilt:
            acts = []
            with lens.trace(b, inference=True):
                for layer in range(L):
                    acts.append(lens.blocks[layer].mlp.hook_act.output.save())
            w = weights(b).cpu()
            for layer in range(L):
                K[:, layer] += torch.einsum("bpe,bpn->en", w, (acts[layer].cpu() > 0).to(torch.float32)).to(torch.float64)
        return K

    return {"esn_lens": esn, "esn_lens_serial": esn_serial, "esn_lens_prefetch": esn_prefetch, "plain": plain,
            "esn_lens_fwd": esn_fwd,
            "hooks_fwd": hooks_fwd, "save_all_fwd": save_all_fwd, "plain_fwd": plain_fwd}


def sweep(lens, model, evaluator, clips, conditions, batch_size):
    """(esn_lens SEREvaluator with encoder reuse, esn_lens without reuse, plain tiled forward with hooks)."""
    from esn_lens.evaluate import SEREvaluator

    no_reuse = SEREvaluator(lens, evaluator.emotions, template=evaluator.template, batch_size=batch_size,
                            encoder_reuse=False)
    C = len(conditions)
    dev = lens.adapter.device
    masks = [None if c.kind == "baseline" else c.edits[0].units.to(dev) for c in conditions]
    option_ids = torch.tensor(evaluator._option_ids, device=dev)

    def factors(n: int) -> list[torch.Tensor]:
        out = []
        for layer in range(lens.n_layers):
            f = torch.ones(C * n, lens.d_mlp, dtype=model.dtype, device=dev)
            for ci, m in enumerate(masks):
                if m is not None:
                    f[ci * n:(ci + 1) * n, m[layer]] = 0
            out.append(f)
        return out

    def plain():
        preds = []
        with torch.inference_mode():
            for i in range(0, len(clips), batch_size):
                chunk = clips[i:i + batch_size]
                b = lens.batch_clips(chunk, [evaluator.prompt(c).text for c in chunk])
                fs = factors(b.size)
                handles = [lens.adapter.site_module(layer, "act").register_forward_hook(
                    lambda mod, inp, out, f=fs[layer]: out * f[:, None, :]) for layer in range(lens.n_layers)]
                try:
                    lg = model(**b.tile(C).inputs).logits[:, -1, :]
                finally:
                    for h in handles:
                        h.remove()
                preds.append(lg[:, option_ids].argmax(-1).cpu())
        return preds

    return {"esn_lens": lambda: evaluator.run(clips, conditions),
            "esn_lens_no_reuse": lambda: no_reuse.run(clips, conditions),
            "plain": plain}


# ---------------------------------------------------------------------- main
def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    ap.add_argument("--dtype", default=None, help="float32 (CPU default), bfloat16 (GPU default) or float16")
    ap.add_argument("--full", action="store_true", help="the real 7B shape (28 x 3584 x 18944 + Whisper-large encoder)")
    ap.add_argument("--scale", type=float, default=0.0625, help="width scale of the 7B shape when not --full")
    ap.add_argument("--layers", type=int, default=None, help="decoder layers (default 28)")
    ap.add_argument("--enc-layers", type=int, default=None, help="audio encoder layers (default 32 * scale)")
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--emotions", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=2.0, help="mean clip duration (uniform 0.6x-1.4x)")
    ap.add_argument("--repeats", type=int, default=3, help="paired timed repeats per workload")
    ap.add_argument("--top-frac", type=float, default=0.005, help="budget r of the sweep's masks")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 on shared machines)")
    ap.add_argument("--skip-sweep", action="store_true")
    ap.add_argument("--recorders", default="hooks,save_all",
                    help="forward-only peers timed beside esn_lens and plain: any of hooks, save_all (comma-separated; "
                         "'none' for neither); save_all is ~30x a plain forward on a GPU, so give it few clips there")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args(argv)

    if args.clips < args.emotions:
        ap.error(f"--clips {args.clips} < --emotions {args.emotions}: every emotion needs a clip")
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            sys.exit("--device cuda but CUDA is not available")
        torch.cuda.set_device(device.index if device.index is not None else 0)  # torch 2.11 needs an index
        torch.backends.cuda.matmul.allow_tf32 = True
    from esn_lens.loading import parse_dtype

    dtype = parse_dtype(args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    from esn_lens.evaluate import SEREvaluator, deactivation_conditions
    from esn_lens.interventions import Condition
    from esn_lens.lens import Lens
    from esn_lens.selectors import find_neurons

    shape = model_shape(args)
    emotions = EMOTIONS[:args.emotions]
    t0 = time.perf_counter()
    model, proc = build(shape, device, dtype)
    sync(device)
    build_s = time.perf_counter() - t0
    n_params = sum(p.numel() for p in model.parameters())
    lens = Lens(model, proc)
    clips = make_clips(args.clips, emotions, args.seconds)
    evaluator = SEREvaluator(lens, emotions, template=TEMPLATE, batch_size=args.batch_size)
    prompt = evaluator.prompt(clips[0]).text
    b0 = lens.batch_clips(clips[:args.batch_size], prompt)
    seq = int(b0.inputs["input_ids"].shape[1])
    info = dict(device=str(device), device_name=(torch.cuda.get_device_name(device) if device.type == "cuda"
                                                 else platform.processor() or platform.machine()),
                dtype=str(dtype).replace("torch.", ""), threads=torch.get_num_threads(), shape=shape,
                params=n_params, build_s=build_s, clips=args.clips, batch_size=args.batch_size,
                emotions=list(emotions), seq_len_first_batch=seq,
                audio_tokens_first_batch=int(b0.masks.audio.sum()), repeats=args.repeats,
                torch=torch.__version__)
    print(f"model: {n_params / 1e6:.1f} M params {info['dtype']} on {info['device_name']} "
          f"(decoder {shape['layers']} x {shape['hidden']} / MLP {shape['d_mlp']}; encoder {shape['enc_layers']} x "
          f"{shape['enc_d']}), built in {build_s:.1f} s; {args.clips} clips, batch {args.batch_size}, "
          f"~{seq} tokens per row", flush=True)
    results: dict = {"info": info}

    # (a) discovery
    var = discovery(lens, model, clips, prompt, emotions, args.batch_size)
    peers = {"hooks": "hooks_fwd", "save_all": "save_all_fwd"}
    chosen = [] if args.recorders == "none" else [r.strip() for r in args.recorders.split(",") if r.strip()]
    unknown = [r for r in chosen if r not in peers]
    if unknown:
        ap.error(f"--recorders: unknown {unknown}; expected hooks, save_all or none")
    for r, nm in peers.items():
        if r not in chosen:
            del var[nm]
    stats = var["esn_lens"]()
    assert stats.K.device.type == device.type and stats.K.dtype == torch.float64, "stats must live on the device in float64"
    assert all(torch.isfinite(getattr(stats, n)).all() for n in ("K", "T", "sum", "sumsq")), "non-finite stats"
    k_ref = var["esn_lens_fwd"]().K
    for nm in [n for n in ("hooks_fwd", "save_all_fwd") if n in var]:  # every recorder counts the same firing tokens
        assert torch.equal(var[nm]().to(k_ref.device), k_ref), f"{nm}: K differs from esn_lens"
    assert torch.equal(var["esn_lens_serial"]().K, stats.K), "prefetching changed the statistics"
    assert torch.equal(var["esn_lens_prefetch"]().K, stats.K), "prefetching changed the statistics"
    times = paired(var, args.repeats, device)
    disc = summarise(times, {k: v for k, v in {"esn_lens": "plain", "esn_lens_serial": "plain", "esn_lens_prefetch": "plain",
                                               "esn_lens_fwd": "plain_fwd", "hooks_fwd": "plain_fwd",
                                               "save_all_fwd": "plain_fwd"}.items() if k in var}, args.clips)
    disc["equal_K"] = True
    for nm, m in mem_runs(var, device).items():
        disc[nm].update(m)
    t_pre = time.perf_counter()
    for i in range(0, args.clips, args.batch_size):
        lens.batch_clips(clips[i:i + args.batch_size], prompt)
    disc["batch_building_s"] = time.perf_counter() - t_pre
    results["discovery"] = disc
    report(results, args.json)

    # (b) deactivation sweep
    if not args.skip_sweep:
        ns = find_neurons(stats, "mad", top_frac=args.top_frac)
        conditions = [Condition.baseline(), *deactivation_conditions(ns)]
        var = sweep(lens, model, evaluator, clips, conditions, args.batch_size)
        times = paired(var, args.repeats, device)
        sw = summarise(times, {"esn_lens": "plain", "esn_lens_no_reuse": "plain"}, args.clips)
        for nm, m in mem_runs(var, device).items():
            sw[nm].update(m)
        sw["conditions"] = len(conditions)
        sw["units_per_emotion"] = ns.counts
        results["sweep"] = sw
        report(results, args.json)
    return results


def report(results: dict, path: str | None) -> None:
    """Print the table so far and (re)write the JSON: a run cut off by a time limit keeps what it measured."""
    print_table(results)
    if path:
        with open(path, "w") as f:
            json.dump(results, f, indent=2, default=str)


def print_table(results: dict) -> None:
    mb = lambda b: f"{b / 2**20:9.1f}"  # noqa: E731
    print(f"\n{'workload':<10} {'variant':<18} {'median s':>9} {'clips/s':>9} {'x plain':>8} {'peak MiB':>9} "
          f"{'(+start)':>9}")
    for wl in ("discovery", "sweep"):
        if wl not in results:
            continue
        for nm, m in results[wl].items():
            if not isinstance(m, dict) or "median_s" not in m:
                continue
            ratio = f"{m['ratio_vs_plain']:8.3f}" if "ratio_vs_plain" in m else f"{'1':>8}"
            print(f"{wl:<10} {nm:<18} {m['median_s']:9.3f} {m['clips_per_s']:9.2f} {ratio} "
                  f"{mb(m.get('peak_bytes', 0))} {mb(m.get('peak_over_start_bytes', 0))}")
    print(f"discovery: batch building alone {results['discovery']['batch_building_s']:.3f} s; "
          "*_fwd = prebuilt batches (forward only)")
    if "sweep" in results:
        print(f"sweep: {results['sweep']['conditions']} conditions (baseline + masks) per clip; "
              f"units per emotion {results['sweep']['units_per_emotion']}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
