"""Peak memory of reading hostile audio files (issue #23, case 1): a header claiming 1 Hz, a 10-hour clip, a 192 kHz
one-hour clip. Each case runs in a fresh process; peak RSS is ``ru_maxrss``.

    python benchmarks/bench_long_audio.py [--dir /tmp/x]

Cases per file: ``window`` = what a run reads for Qwen2-Audio (``lens.batch_clips``: the 30 s window + 1 s),
``screen`` = the run's pre-flight screening (at most ``READ_LIMIT_SECONDS`` = 600 s, at 16 kHz), ``lens`` = the whole
``Lens.batch_clips`` + forward of the tiny Qwen2-Audio (torch included). The long files are sparse WAVs (noise, then
zeros) so they cost no disk.
"""
from __future__ import annotations

import argparse
import os
import struct
import subprocess
import sys
import tempfile
import textwrap

import numpy as np

CHILD = textwrap.dedent("""
    import resource, sys
    path, case = sys.argv[1], sys.argv[2]
    from esn_lens.data.clip import EmotionClip
    from esn_lens.errors import InputError
    try:
        if case == "lens":
            from esn_lens.lens import Lens
            from esn_lens.testing import build_tiny
            lens = Lens(*build_tiny("qwen2_audio"))
            b = lens.batch_clips([EmotionClip("c", "angry", path=path)], "Which emotion?", long_audio="truncate")
            lens.run(b)
            what = f"{int(b.masks.audio.sum())} audio tokens"
        else:
            a, r = EmotionClip("c", "angry", path=path).load(16000, max_seconds=31 if case == "window" else None)
            what = f"{a.size / r:.1f} s at {r} Hz"
    except InputError as e:
        what = f"refused: {e}"
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, "|", what)
""")


def sparse_wav(path: str, rate: int, seconds: float, noise_seconds: float = 10.0) -> str:
    n = int(rate * seconds)
    with open(path, "wb") as f:
        f.write(b"RIFF" + struct.pack("<I", min(36 + 2 * n, 2**32 - 1)) + b"WAVEfmt "
                + struct.pack("<IHHIIHH", 16, 1, 1, rate, 2 * rate, 2, 16) + b"data" + struct.pack("<I", 2 * n))
        k = min(n, int(rate * noise_seconds))
        f.write((np.random.default_rng(0).standard_normal(k) * 3000).astype("<i2").tobytes())
        f.truncate(44 + 2 * n)
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default=None)
    a = ap.parse_args()
    d = a.dir or tempfile.mkdtemp()
    files = {"1 Hz header (150k samples, 300 KB)": sparse_wav(os.path.join(d, "one_hz.wav"), 1, 150_000, 150_000),
             "10-hour clip, 16 kHz (1.15 GB)": sparse_wav(os.path.join(d, "ten_hours.wav"), 16000, 36000),
             "1-hour clip, 192 kHz (1.38 GB)": sparse_wav(os.path.join(d, "hi_rate.wav"), 192000, 3600)}
    print("| file | case | peak RSS MiB | result |\n|---|---|---|---|")
    for name, path in files.items():
        for case in ("window", "screen", "lens"):
            out = subprocess.run([sys.executable, "-c", CHILD, path, case], capture_output=True, text=True)
            if out.returncode:
                print(f"| {name} | {case} | - | exit {out.returncode}: {out.stderr.strip().splitlines()[-1:]} |")
                continue
            mib, what = out.stdout.strip().splitlines()[-1].split(" | ", 1)
            print(f"| {name} | {case} | {mib} | {what[:90]} |")
    for p in files.values():
        os.unlink(p)


if __name__ == "__main__":
    main()
