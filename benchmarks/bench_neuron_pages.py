"""What the neuron pages cost on the shipped demo: CPU seconds of the statistics pass (for scale), the top-activations
pass over the same pool (every unit of the paper selectors' 2 % sets), the pages' data (input positions, audio
files, waveforms) and their HTML.

    python benchmarks/bench_neuron_pages.py [--run esn_demo_run]

``--run``: a finished ``esn-lens demo`` folder (its pool is used; default: the first 32 identification clips).
The whole demo's growth is measured by running ``esn-lens demo --quick`` on this branch and on the one before.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default=None)
    args = ap.parse_args()
    from esn_lens import Lens
    from esn_lens.demo_model import DEMO_EMOTIONS, demo_clips, demo_prompt, load_demo_model
    from esn_lens.neuron_data import collect_top, page_data
    from esn_lens.report_neurons import file_sink, render
    from esn_lens.selectors import find_neurons
    from esn_lens.topk import TopActivations, edges_from_stats

    lens = Lens(*load_demo_model())
    ident = demo_clips("identification")
    if args.run:
        by = {c.utterance_id: c for c in ident}
        pool = [by[i] for i in json.loads((Path(args.run) / "pool.json").read_text())["ids"]]
    else:
        pool = ident[:32]
    prompts = [demo_prompt(c.utterance_id) for c in pool]

    def timed(label, fn):
        c, w = time.process_time(), time.perf_counter()
        out = fn()
        print(f"{label:>14}: cpu {time.process_time() - c:6.2f} s   wall {time.perf_counter() - w:6.2f} s")
        return out

    stats = timed("stats pass", lambda: lens.collect_stats(pool, prompts, DEMO_EMOTIONS, progress=False, num_workers=0))
    sets = {n: find_neurons(stats, n, top_frac=0.02) for n in ("lap", "lape", "mad", "conact")}
    mask = sum(ns.all_units().long() for ns in sets.values()) > 0
    units = mask.nonzero()
    lo, hi = edges_from_stats(stats, units)
    top = TopActivations(units, DEMO_EMOTIONS, k=6, lo=lo, hi=hi)
    seen: dict = {}
    timed("top pass", lambda: collect_top(lens, pool, prompts, top, num_workers=0, seen=seen))
    with tempfile.TemporaryDirectory() as d:
        data = timed("page data", lambda: page_data(lens, top, pool, prompts, sets=sets, audio_sink=file_sink(d),
                                                   seen=seen))
        html = timed("render", lambda: render(data))
        size = sum(p.stat().st_size for p in Path(d).rglob("*.ogg"))
    print(f"{len(units)} units, {len(data['clips'])} clips; section {len(html) / 1e6:.2f} MB, audio {size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
