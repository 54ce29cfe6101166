"""Small on-disk assets for the pipeline / CLI tests: saved tiny models and manifest corpora.

* :func:`planted_model_dir` -- the planted-unit text model (``esn_lens.testing.planted``) saved with
  ``save_pretrained``: it answers every clip correctly and its emotion decision sits in known units, so a
  run shows the paper's signature (ConAct/MAD ESS far below random) in a second.
* :func:`audio_model_dir` -- ``build_tiny("qwen2_audio")`` saved: the real audio path (random weights).
* :func:`write_text_corpus` / :func:`write_tone_corpus` -- ``manifest.csv`` corpora (path, emotion, speaker,
  utterance_id, text + wav files) read by the ``manifest`` loader.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import soundfile as sf

EMOTIONS = ("angry", "happy", "neutral", "sad")
RATE = 16000


def planted_model_dir(root: Path) -> Path:
    from esn_lens.testing.planted import build_planted

    out = root / "planted_model"
    if not (out / "config.json").exists():
        model, tok, _ = build_planted(EMOTIONS)
        model.save_pretrained(out)
        tok.save_pretrained(out)
    return out


def audio_model_dir(root: Path, seed: int = 0) -> Path:
    from esn_lens.testing import build_tiny

    out = root / f"qwen2_audio_{seed}"
    if not (out / "config.json").exists():
        model, proc = build_tiny("qwen2_audio", seed=seed)
        model.save_pretrained(out)
        proc.save_pretrained(out)
    return out


def _write(root: Path, rows: list[list[str]]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "manifest.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "emotion", "speaker", "utterance_id", "text"])
        w.writerows(rows)
    return root


def write_text_corpus(root: Path, n_per_emotion: int = 8, seed: int = 0, prefix: str = "u") -> Path:
    """Planted-model clips (transcripts carry the cue word) with a short silent wav each; speakers s0..s3."""
    from esn_lens.testing.planted import planted_clips

    rows = []
    silence = np.zeros(int(0.1 * RATE), dtype=np.int16)
    for c in planted_clips(n_per_emotion, EMOTIONS, seed=seed, prefix=prefix):
        rel = f"wav/{c.speaker}/{c.utterance_id}.wav"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(root / rel), silence, RATE, subtype="PCM_16")
        rows.append([rel, c.emotion, c.speaker, c.utterance_id, c.text])
    return _write(root, rows)


TONES = {"angry": 500, "happy": 300, "neutral": 200, "sad": 400}


def write_tone_corpus(root: Path, speakers: int = 4, per_speaker: int = 3, seconds: float = 0.3, seed: int = 0) -> Path:
    """Tones (one pitch per emotion, shifted per speaker and clip, a little noise) for the audio models."""
    rng = np.random.default_rng(seed)
    rows = []
    t = np.arange(int(seconds * RATE)) / RATE
    for s in range(speakers):
        for e in EMOTIONS:
            for k in range(per_speaker):
                a = 0.4 * np.sin(2 * np.pi * (TONES[e] + 20 * s + 7 * k) * t) + 0.01 * rng.standard_normal(t.size)
                rel = f"wav/spk{s}/{e}_{k}.wav"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                sf.write(str(root / rel), a, RATE, subtype="PCM_16")
                rows.append([rel, e, f"spk{s}", f"spk{s}_{e}_{k}", ""])
    return _write(root, rows)


def run_main(argv) -> int:
    """``esn-lens`` in-process: its exit status (argparse's SystemExit included)."""
    from esn_lens.cli import main

    try:
        return main(argv)
    except SystemExit as e:
        return int(e.code)
