"""Overhead of recording NeuronStats in the traced forward, and memory flatness over the number of clips.

    python benchmarks/bench_stats.py            # ratios + memory (about 1-2 minutes on 2 cores)

Model: a real Qwen2AudioForConditionalGeneration with 4 decoder layers, hidden 256, MLP 1024;
batch 8 of ~8 s clips -> ~250 tokens per row. Three variants timed side by side in one run (paired, the order
rotating every repeat; medians of per-repeat ratios): the plain model forward (no nnsight, no statistics), a
hand-written recorder (plain torch forward hooks on every layer's MLP activation computing the same per-emotion
K / sum / sum of squares in float64 over the same positions; checked equal to esn_lens's), and esn_lens
(``lens.run(batch, stats=...)``: the nnsight trace + NeuronStats). Targets: esn_lens / plain <= 1.05;
esn_lens / hand-written hooks <= 1.02. Memory: peak RSS after 100 vs 1,000 clips in fresh processes (flat).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import peak_rss_mb  # noqa: E402

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


def hook_recorder(lens, b, idx, n_emotions: int, positions: str = "valid"):
    """``(run, totals)``: a hand-written recorder -- plain torch forward hooks on each layer's MLP activation module
    adding per-emotion firing counts K, sums and sums of squares (float64 totals) of the counted positions -- and the
    totals it accumulates into. Written independently of esn_lens's kernel: each row's positions are summed by a
    float32 matmul against its mask, rows go into their emotion by a float64 matmul."""
    root, L, N = lens.adapter.root(), lens.n_layers, lens.d_mlp
    dev = lens.adapter.device
    tot = {k: torch.zeros(n_emotions, L, N, dtype=torch.float64, device=dev) for k in ("K", "sum", "sumsq")}
    mask = b.masks.select(positions).to(device=dev, dtype=torch.float32)  # (batch, pos)
    onehot_t = torch.nn.functional.one_hot(idx, n_emotions).to(device=dev, dtype=torch.float64).T  # (emotion, batch)
    modules = [lens.adapter.site_module(layer, "act") for layer in range(L)]

    def hook(layer):
        def fn(module, args, out):
            a = out.detach().float()
            k = torch.einsum("bp,bpn->bn", mask, (a > 0).float())
            s = torch.einsum("bp,bpn->bn", mask, a)
            ss = torch.einsum("bp,bpn->bn", mask, a * a)
            tot["K"][:, layer] += onehot_t @ k.double()
            tot["sum"][:, layer] += onehot_t @ s.double()
            tot["sumsq"][:, layer] += onehot_t @ ss.double()
        return fn

    def run():
        handles = [m.register_forward_hook(hook(layer)) for layer, m in enumerate(modules)]
        try:
            with torch.inference_mode():
                root(**b.inputs)
        finally:
            for h in handles:
                h.remove()

    return run, tot


def workload():
    """``(lens, batch, variants, check)``: the plain forward, the hand-written hook recorder and esn_lens recording
    NeuronStats, on the same batch; ``check()`` runs each recorder once on fresh totals and compares them."""
    lens = build()
    b = make_batch(lens)
    idx = torch.tensor([i % 4 for i in range(b.size)])
    stats = lens.new_stats(EMOTIONS)
    root = lens.adapter.root()
    hooks, _ = hook_recorder(lens, b, idx, len(EMOTIONS), stats.positions)

    def plain():
        with torch.inference_mode():
            root(**b.inputs)

    def traced():
        lens.run(b, stats=stats, emotion_index=idx, logits="none")

    def check() -> dict:
        fresh = lens.new_stats(EMOTIONS)
        lens.run(b, stats=fresh, emotion_index=idx, logits="none")
        run, tot = hook_recorder(lens, b, idx, len(EMOTIONS), fresh.positions)
        run()
        assert torch.equal(tot["K"], fresh.K), "hand-written hooks: K differs from esn_lens"
        err = {n: float(((tot[n] - getattr(fresh, n)).abs() / getattr(fresh, n).abs().clamp_min(1e-6)).max())
               for n in ("sum", "sumsq")}
        assert all(e < 1e-5 for e in err.values()), f"hand-written hooks: sums differ from esn_lens {err}"
        return {"K_equal": True, "max_rel_diff": err}

    return lens, b, {"plain": plain, "hooks": hooks, "esn_lens": traced}, check


def paired3(variants: dict, repeats: int, warmup: int = 2) -> dict[str, list[float]]:
    """Time every variant once per repeat, the order rotating each repeat; per-variant lists of seconds."""
    names = list(variants)
    for _ in range(warmup):
        for nm in names:
            variants[nm]()
    times: dict[str, list[float]] = {nm: [] for nm in names}
    for r in range(repeats):
        k = r % len(names)
        for nm in names[k:] + names[:k]:
            t0 = time.perf_counter()
            variants[nm]()
            times[nm].append(time.perf_counter() - t0)
    return times


def ratio(repeats: int) -> dict:
    _, b, var, check = workload()
    agree = check()
    t = paired3(var, repeats)
    med = {k: statistics.median(v) for k, v in t.items()}
    per = lambda a, c: statistics.median(x / y for x, y in zip(t[a], t[c]))  # noqa: E731
    return {"tokens_per_row": int(b.inputs["input_ids"].shape[1]), "batch": b.size, "plain_s": med["plain"],
            "hooks_s": med["hooks"], "traced_with_stats_s": med["esn_lens"], "median_ratio": per("esn_lens", "plain"),
            "hooks_vs_plain": per("hooks", "plain"), "esn_lens_vs_hooks": per("esn_lens", "hooks"),
            "agreement": agree, "repeats": repeats, "threads": torch.get_num_threads()}


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
    ap.add_argument("--json", default=None, help="write the ratios here")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.memory_child:
        return memory_child(a.memory_child)
    r = ratio(a.repeats)
    print(f"batch {r['batch']} x {r['tokens_per_row']} tokens, {r['threads']} thread(s), {r['repeats']} paired repeats; "
          f"hand-written hooks agree with esn_lens (K equal, sums max rel. diff "
          f"{max(r['agreement']['max_rel_diff'].values()):.1e})")
    print(f"  plain forward                      {r['plain_s'] * 1e3:8.1f} ms")
    print(f"  hand-written hooks (K, sum, sumsq) {r['hooks_s'] * 1e3:8.1f} ms   x plain {r['hooks_vs_plain']:.3f}")
    print(f"  esn_lens lens.run(stats=...)       {r['traced_with_stats_s'] * 1e3:8.1f} ms   x plain "
          f"{r['median_ratio']:.3f} (target <= 1.05)   x hooks {r['esn_lens_vs_hooks']:.3f} (target <= 1.02)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(r, f, indent=2)
    if not a.skip_memory:
        m = memory()
        print("peak RSS: " + ", ".join(f"{x['clips']} clips -> {x['peak_rss_mb']:.0f} MiB" for x in m)
              + f" (growth {m[1]['peak_rss_mb'] - m[0]['peak_rss_mb']:+.0f} MiB)")


if __name__ == "__main__":
    main()
