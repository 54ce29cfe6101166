"""Overhead of recording NeuronStats in the traced forward, and memory flatness over the number of clips.

    python benchmarks/bench_stats.py            # ratio + memory (about 1-2 minutes on 2 cores)

Model: a real Qwen2AudioForConditionalGeneration with 4 decoder layers, hidden 256, MLP 1024;
batch 8 of ~8 s clips -> ~250 tokens per row. Reference: the plain model forward (no nnsight).
Target: median ratio <= 1.05. Memory: peak RSS after 100 vs 1,000 clips in fresh processes (flat).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import paired_ratio, peak_rss_mb  # noqa: E402

EMOTIONS = ("angry", "happy", "neutral", "sad")


def build(seed: int = 0):
    from esn_lens.lens import Lens
    from esn_lens.testing import build_tiny

    model, proc = build_tiny("qwen2_audio", seed=seed, n_layers=4, hidden=256, d_mlp=1024, heads=4, kv_heads=2,
                             encoder_hidden=64)
    return Lens(model, proc)


def make_batch(lens, n: int = 8, seconds: float = 8.0, seed: int = 0):
    from esn_lens.testing import tiny_audio

    audios = [tiny_audio(seconds, freq=150 + 25 * i, seed=seed + i) for i in range(n)]
    return lens.batch(audios, "What emotion does the speaker express?", sampling_rate=16000)


def workload():
    """``(batch, plain, traced)``: the plain forward and the forward recording NeuronStats, on the same batch."""
    lens = build()
    b = make_batch(lens)
    idx = torch.tensor([i % 4 for i in range(b.size)])
    stats = lens.new_stats(EMOTIONS)
    root = lens.adapter.root()

    def plain():
        with torch.inference_mode():
            root(**b.inputs)

    def traced():
        lens.run(b, stats=stats, emotion_index=idx, logits="none")

    return lens, b, plain, traced


def ratio(repeats: int) -> dict:
    _, b, plain, traced = workload()
    r, t_plain, t_trace = paired_ratio(plain, traced, repeats=repeats)
    return {"tokens_per_row": int(b.inputs["input_ids"].shape[1]), "batch": b.size, "plain_s": t_plain,
            "traced_with_stats_s": t_trace, "median_ratio": r}


def memory_child(n_clips: int) -> None:
    lens = build()
    b = make_batch(lens, n=8, seconds=2.0)
    idx = torch.tensor([i % 4 for i in range(b.size)])
    stats = lens.new_stats(EMOTIONS)
    for _ in range(n_clips // b.size):  # stream the same batch: the stats' memory must not grow
        lens.run(b, stats=stats, emotion_index=idx, logits="none")
    print(json.dumps({"clips": n_clips, "peak_rss_mb": peak_rss_mb(), "tokens": float(stats.T.sum())}))


def memory() -> list[dict]:
    out = []
    for n in (100, 1000):
        res = subprocess.run([sys.executable, __file__, "--memory-child", str(n)], capture_output=True, text=True,
                             check=True)
        out.append(json.loads(res.stdout.strip().splitlines()[-1]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--memory-child", type=int, default=None)
    ap.add_argument("--skip-memory", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.memory_child:
        return memory_child(a.memory_child)
    r = ratio(a.repeats)
    print(f"record stats in the trace / plain forward: median ratio {r['median_ratio']:.3f} "
          f"(plain {r['plain_s'] * 1e3:.1f} ms, traced {r['traced_with_stats_s'] * 1e3:.1f} ms; "
          f"batch {r['batch']} x {r['tokens_per_row']} tokens; target <= 1.05)")
    if not a.skip_memory:
        m = memory()
        print("peak RSS: " + ", ".join(f"{x['clips']} clips -> {x['peak_rss_mb']:.0f} MiB" for x in m)
              + f" (growth {m[1]['peak_rss_mb'] - m[0]['peak_rss_mb']:+.0f} MiB)")


if __name__ == "__main__":
    main()
