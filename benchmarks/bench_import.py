"""Import time of ``esn_lens`` and of ``esn-lens models`` against ``import torch, transformers``.

    python benchmarks/bench_import.py [--repeats 5]

Each figure is the median wall time of fresh Python subprocesses (so no module is cached between runs), the
three kinds interleaved so a busy machine slows all alike. Target (issue #15): ``import esn_lens`` and
``esn-lens models`` take at most 1.5x ``import torch, transformers``. esn_lens adds nnsight (its trace) and
its own modules; adapters import their model and processor classes only on use.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CASES = {
    "import torch, transformers": "import torch, transformers",
    "import esn_lens": "import esn_lens",
    "esn-lens models": "import sys; from esn_lens.cli import main; sys.exit(main(['models']))",
}


def once(code: str) -> float:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    times: dict[str, list[float]] = {k: [] for k in CASES}
    once("import esn_lens")  # warm the file-system cache once
    for _ in range(args.repeats):
        for name, code in CASES.items():
            times[name].append(once(code))
    base = statistics.median(times["import torch, transformers"])
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:<28} median {med:6.2f} s  ({med / base:4.2f}x)   runs: {', '.join(f'{t:.2f}' for t in ts)}")
    worst = max(statistics.median(times[k]) for k in ("import esn_lens", "esn-lens models")) / base
    print(f"worst ratio {worst:.2f}x (target <= 1.5x): {'ok' if worst <= 1.5 else 'OVER'}")


if __name__ == "__main__":
    main()
