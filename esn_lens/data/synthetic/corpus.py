"""Rendering clips and writing a synthetic corpus in the manifest layout."""
from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ...errors import InputError
from .recipes import _EFFECT_FNS, _RECIPE_KEYS, EFFECTS, RECIPES, SENTENCES, scale_recipe  # noqa: F401
from .voices import Speaker, _Espeak, make_speakers


def render_clip(es: _Espeak, speaker: Speaker, emotion: str, text: str, rng: np.random.Generator, *,
                difficulty: float = 1.0, sample_rate: int = 16000, recipes: dict[str, dict] | None = None,
                intensity: float = 1.0) -> np.ndarray:
    """One clip (float32, ``sample_rate``): the recipe of ``emotion`` (from ``recipes``, default
    :data:`RECIPES`) at ``intensity`` (:func:`scale_recipe`) with per-clip jitter, level and noise."""
    import soxr

    r = (RECIPES if recipes is None else recipes)[emotion]
    if intensity != 1.0:
        r = scale_recipe(r, intensity)
    mix = r.get("mix", 1.0)
    d = float(difficulty)
    pitch = np.clip(speaker.pitch + r["pitch"] + rng.normal(0, 7 * d), 0, 99)
    range_ = np.clip(speaker.range * (1 + r["range"] + rng.normal(0, 0.35 * d)), 0, 99)
    rate = np.clip(speaker.rate * r["rate"] * np.exp(rng.normal(0, 0.07 * d)), 80, 450)
    gain_db = r["gain"] + rng.normal(0, 3 * d)
    raw = es.synth(text, speaker.voice, rate=round(rate), pitch=round(pitch), range_=round(range_),
                   seed=int(rng.integers(2**31)))
    x = raw.astype(np.float64) / 32768.0
    for name, val in r.get("effects", {}).items():
        if rng.random() < 0.2 * d:  # effect dropped for this clip
            continue
        wet = _EFFECT_FNS[name](x, val, es.rate)
        x = wet if mix == 1.0 else (1.0 - mix) * x + mix * wet
    x = soxr.resample(x, es.rate, sample_rate)
    level_db = gain_db + rng.uniform(-6, 6)
    x = x / (np.sqrt(np.mean(x ** 2)) + 1e-9) * 0.05 * 10 ** (level_db / 20)
    snr = rng.uniform(15, 40)
    noise = rng.standard_normal(x.size) * np.sqrt(np.mean(x ** 2)) * 10 ** (-snr / 20)
    x = np.clip(x + noise, -1, 1 - 1 / 32768)
    return x.astype(np.float32)


def generate_corpus(out_dir: str | Path, n_per_emotion_per_speaker: int = 10, speakers: int | Sequence[Speaker] = 8,
                    emotions: Sequence[str] = ("angry", "happy", "neutral", "sad"), difficulty: float = 1.0,
                    seed: int = 0, sample_rate: int = 16000, audio_format: str = "wav",
                    speaker_offset: int = 0, recipes: dict[str, Any] | None = None,
                    intensity: float | tuple[float, float] = 1.0) -> dict:
    """Write a synthetic corpus to ``out_dir`` (``<speaker>/<utterance_id>.wav`` + ``manifest.csv``).

    ``speakers``: a count (voices drawn by ``make_speakers(count + speaker_offset, seed)``, the last ``count``
    used) or explicit :class:`Speaker` objects. ``audio_format``: ``"wav"`` (int16) or ``"flac"``.
    ``recipes``: emotion -> recipe, in the format of :data:`RECIPES` (the default), e.g. to give each class
    its own voice-quality cue. ``intensity``: how strongly each clip carries its recipe (:func:`scale_recipe`),
    one value for all clips or a ``(low, high)`` range drawn uniformly per clip (then the manifest gains an
    ``intensity`` column; the other draws, hence the clips at intensity 1, are unchanged).
    Returns ``{"clips", "seconds", "clips_per_s", "audio_seconds", "manifest"}``. Raises :class:`InputError`
    for unknown emotions, malformed recipes, an intensity outside [0, 1], or when espeak-ng is not installed.
    """
    import soundfile as sf

    book = RECIPES if recipes is None else recipes
    unknown = [e for e in emotions if e not in book]
    if unknown:
        raise InputError(f"no synthetic recipe for {unknown}; known: {sorted(book)}")
    if any(not isinstance(book[e], dict) or set(book[e]) - {"effects"} != set(_RECIPE_KEYS)
           or not isinstance(book[e].get("effects", {}), dict) or set(book[e].get("effects", {})) - set(EFFECTS)
           for e in emotions):
        raise InputError(f"each recipe needs exactly the keys {_RECIPE_KEYS} (+ 'effects' from {EFFECTS}); "
                         f"got {{{', '.join(f'{e!r}: {book[e]!r}' for e in emotions)}}}")
    if audio_format not in ("wav", "flac"):
        raise InputError(f"audio_format must be 'wav' or 'flac', got {audio_format!r}")
    spk = (make_speakers(int(speakers) + speaker_offset, seed)[speaker_offset:] if isinstance(speakers, int)
           else list(speakers))
    graded = not isinstance(intensity, (int, float))
    try:
        bounds = tuple(float(v) for v in intensity) if graded else (float(intensity),) * 2
    except (TypeError, ValueError):
        bounds = ()
    if len(bounds) != 2 or not 0.0 <= bounds[0] <= bounds[1] <= 1.0:
        raise InputError(f"intensity must be a value in [0, 1] or a range (low, high) with 0 <= low <= high <= 1, "
                         f"got {intensity!r}")
    es = _Espeak.get(fresh=True)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    t0 = time.perf_counter()
    audio_s = 0.0
    for s in spk:
        (out / s.name).mkdir(exist_ok=True)
        for e in emotions:
            for j in range(n_per_emotion_per_speaker):
                text = SENTENCES[(j + hash_int(s.name)) % len(SENTENCES)]
                rng = np.random.default_rng([seed, hash_int(s.name), hash_int(e), j])
                level = (float(np.random.default_rng([seed, hash_int(s.name), hash_int(e), j, 1]).uniform(*bounds))
                         if graded else bounds[0])
                x = render_clip(es, s, e, text, rng, difficulty=difficulty, sample_rate=sample_rate, recipes=book,
                                intensity=level)
                audio_s += x.size / sample_rate
                uid = f"{s.name}_{e}_{j:03d}"
                rel = f"{s.name}/{uid}.{audio_format}"
                if audio_format == "wav":
                    sf.write(out / rel, x, sample_rate, subtype="PCM_16", format="WAV")
                else:
                    sf.write(out / rel, x, sample_rate, subtype="PCM_16", format="FLAC")
                rows.append((rel, e, s.name, uid, text) + ((f"{level:.4f}",) if graded else ()))
    with open(out / "manifest.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["path", "emotion", "speaker", "utterance_id", "text"] + (["intensity"] if graded else []))
        w.writerows(rows)
    dt = time.perf_counter() - t0
    return {"clips": len(rows), "seconds": dt, "clips_per_s": len(rows) / max(dt, 1e-9), "audio_seconds": audio_s,
            "manifest": str(out / "manifest.csv")}


def hash_int(s: str) -> int:
    """A stable (process-independent) small integer hash of a string."""
    h = 2166136261
    for b in s.encode():
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h


