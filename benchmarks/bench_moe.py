"""Mixture-of-experts statistics: memory at the Qwen3-Omni-30B-A3B unit count, and the stats pass vs a plain forward.

    python benchmarks/bench_moe.py             # about 1 minute on 2 cores; prints one JSON object
    python benchmarks/bench_moe.py --device cuda --dtype bfloat16   # the same on a GPU (benchmarks/gpu_bench.sh)

1. Memory (computed, and measured by allocating the real objects): routed NeuronStats at 48 layers x 98,304 units
   (128 experts x 768 neurons), 4 emotions -- K, T, sum, sumsq float64 on the model's device, the same bytes in the
   saved file on the host -- plus RouterStats, and the per-layer transient dense views of one batch.
2. Speed: a reduced Qwen3-Omni thinker (4 layers, hidden 256, 16 experts, top-4, 64 neurons per expert -> 1,024
   units per layer), batch 8 of 4 s clips. Paired medians, in one run: the untouched model's forward (transformers'
   default experts implementation) vs ``lens.run(batch, stats=...)`` (esn_lens's exact per-expert path + routed
   statistics), the exact path alone vs it, and the stats pass vs transformers' eager experts loop (same arithmetic).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import paired_ratio, peak_rss_mb  # noqa: E402

EMOTIONS = ("angry", "happy", "neutral", "sad")
FULL = dict(layers=48, experts=128, d_expert=768, top_k=8, hidden=2048)


def memory_figures(measure: bool, device: str) -> dict:
    """Bytes of routed stats at the 30B-A3B shape: computed, and (``measure``) measured from real allocations."""
    from esn_lens.moe_stats import RouterStats
    from esn_lens.stats import NeuronStats

    E, L, X, I = len(EMOTIONS), FULL["layers"], FULL["experts"], FULL["d_expert"]
    N = X * I
    per_table = E * L * N * 8
    out = {"units_per_layer": N, "layers": L, "emotions": E,
           "stats_bytes_computed": 4 * per_table + 2 * E * 8,  # K, T, sum, sumsq + n_clips, n_tokens
           "dense_T_would_save_bytes": per_table - E * 8,
           "router_stats_bytes_computed": 2 * E * L * X * 8 + 2 * E * 8}
    tokens = 8 * 300  # one batch: 8 clips of ~23 s of audio at 13 tokens/s
    for name, nbytes in (("float32", 4), ("bfloat16", 2)):
        out[f"dense_view_bytes_per_layer_{name}_2400_tokens"] = tokens * N * nbytes  # one (batch, pos, units) view
    if measure:
        before = peak_rss_mb()
        s = NeuronStats(EMOTIONS, L, N, routed=True, device=device)
        rs = RouterStats(EMOTIONS, L, X, FULL["top_k"])
        out["stats_bytes_measured"] = sum(getattr(s, n).nbytes for n in s.tensor_names())
        out["router_stats_bytes_measured"] = sum(getattr(rs, n).nbytes for n in ("counts", "prob_sum", "tokens",
                                                                                 "n_clips"))
        out["host_state_dict_bytes"] = sum(v.nbytes for k, v in s.state_dict().items() if k != "meta")
        out["peak_rss_growth_mb"] = round(peak_rss_mb() - before, 1)
        if device.startswith("cuda"):
            out["cuda_max_memory_allocated"] = torch.cuda.max_memory_allocated()
        del s, rs
    return out


def speed(device: str, dtype: str, repeats: int, threads: int) -> dict:
    from esn_lens.lens import Lens
    from esn_lens.testing.tiny import tiny_audio
    from esn_lens.testing.tiny_moe import build_tiny_moe

    torch.set_num_threads(threads)
    kw = dict(seed=0, n_layers=4, hidden=256, d_mlp=16 * 64, heads=4, kv_heads=2, encoder_hidden=64)
    plain, _ = build_tiny_moe(n_experts=16, top_k=4, **kw)
    model, proc = build_tiny_moe(n_experts=16, top_k=4, **kw)
    dt = getattr(torch, dtype)
    plain, model = plain.to(device, dt), model.to(device, dt)
    lens = Lens(model, proc)
    audios = [tiny_audio(4.0, freq=150 + 25 * i, seed=i) for i in range(8)]
    batch = lens.batch(audios, "What emotion does the speaker express?", sampling_rate=16000,
                       labels=[EMOTIONS[i % 4] for i in range(8)])  # inputs on the model's device
    inputs = batch.inputs
    idx = torch.tensor([i % 4 for i in range(8)])

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    def ref():
        with torch.inference_mode():
            plain(**inputs)
        sync()

    def exact():
        with torch.inference_mode():
            model(**inputs)
        sync()

    def stats_pass():
        lens.run(batch, stats=lens.new_stats(EMOTIONS), emotion_index=idx, logits="none")
        sync()

    eager, _ = build_tiny_moe(n_experts=16, top_k=4, **kw)
    eager = eager.to(device, dt)
    for c in (eager.config, eager.config.text_config):
        c._experts_implementation = "eager"  # transformers' per-expert loop: the same arithmetic as the exact path

    def ref_eager():
        with torch.inference_mode():
            eager(**inputs)
        sync()

    r_stats, t_ref, t_stats = paired_ratio(ref, stats_pass, repeats=repeats)
    r_exact, _, t_exact = paired_ratio(ref, exact, repeats=repeats)
    r_eager, t_eager, _ = paired_ratio(ref_eager, stats_pass, repeats=repeats)
    return {"shape": {"layers": 4, "hidden": 256, "experts": 16, "top_k": 4, "d_expert": 64, "units": lens.d_mlp,
                      "tokens": int(batch.inputs["input_ids"].numel())},
            "experts_implementation_of_plain": plain.config.text_config._experts_implementation,
            "plain_forward_s": round(t_ref, 4), "stats_pass_s": round(t_stats, 4), "exact_forward_s": round(t_exact, 4),
            "eager_forward_s": round(t_eager, 4), "ratio_stats_pass_vs_plain": round(r_stats, 3),
            "ratio_exact_path_vs_plain": round(r_exact, 3), "ratio_stats_pass_vs_eager_forward": round(r_eager, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-measure", action="store_true", help="computed memory figures only (no 600 MB allocation)")
    ap.add_argument("--json", help="also write the result here")
    a = ap.parse_args()
    res = {"memory_30b_a3b": memory_figures(not a.no_measure, a.device),
           "speed": speed(a.device, a.dtype, a.repeats, a.threads)}
    text = json.dumps(res, indent=1)
    print(text)
    if a.json:
        with open(a.json, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
