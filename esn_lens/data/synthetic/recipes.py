"""Prosody recipes of the synthetic corpus: per-emotion pitch, range, rate and gain, the voice-quality effects, and
graded intensity (:func:`scale_recipe`)."""
from __future__ import annotations

import numpy as np

from ...errors import InputError

SENTENCES: tuple[str, ...] = (
    "The meeting is on Tuesday at ten.",
    "I put the folder on the kitchen table.",
    "The train leaves from platform four.",
    "She moved the chair next to the window.",
    "We will paint the fence next week.",
    "The shop closes at six in the evening.",
    "He read the report before lunch.",
    "The box is in the garage by the door.",
    "They walked to the station this morning.",
    "The bus was on time today.",
    "My phone is on the desk upstairs.",
    "The letter arrived on Monday.",
    "I bought bread and milk at the market.",
    "The lamp is next to the bookshelf.",
    "The car is parked in the street.",
    "We talked about the weather for a while.",
    "The keys are in the blue bag.",
    "The class starts at nine tomorrow.",
    "He opened the door and sat down.",
    "The cups are on the second shelf.",
    "I will call you after the meeting.",
    "The garden has three old trees.",
    "The printer is on the third floor.",
    "She wrote the number on a card.",
)

#: Emotion recipes (FIELD-NOTES "Speech and a trainable demo model"): espeak pitch offset, relative
#: pitch-range change, rate factor, gain in dB and voice-quality effects.
RECIPES: dict[str, dict] = {
    "neutral": dict(pitch=0.0, range=0.0, rate=1.00, gain=0.0, effects={}),
    "happy": dict(pitch=12.0, range=0.60, rate=1.10, gain=2.0, effects={"treble": 3.0}),
    "sad": dict(pitch=-10.0, range=-0.60, rate=0.82, gain=-4.0, effects={"lowpass": 3000.0}),
    "angry": dict(pitch=5.0, range=0.80, rate=1.15, gain=5.0, effects={"overdrive": 1.0, "treble": 4.0}),
    "fearful": dict(pitch=16.0, range=0.10, rate=1.20, gain=-1.0, effects={"tremolo": 7.0}),
}

#: The recipe book of the shipped demo model's corpus (docs/demo_model.md, runs k2 to k11; rendered with
#: ``difficulty=0.5``). Each emotion is a corner of its own: angry by overdrive and level, happy by high pitch
#: and treble, sad by low pitch, slow rate and a 2 kHz lowpass, neutral by a flat contour and a presence
#: boost, so that none of them is the midpoint of the others. ``plain`` (no colouring) is not an emotion: the
#: demo model is trained to answer it uniformly, so no emotion is its default answer.
DEMO_RECIPES: dict[str, dict] = {
    "angry": dict(pitch=0.0, range=0.8, rate=1.15, gain=5.0, effects={"overdrive": 1.5}),
    "happy": dict(pitch=22.0, range=0.6, rate=1.10, gain=0.0, effects={"treble": 10.0}),
    "neutral": dict(pitch=0.0, range=-0.9, rate=1.00, gain=0.0, effects={"presence": 9.0}),
    "sad": dict(pitch=-12.0, range=-0.5, rate=0.80, gain=-4.0, effects={"lowpass": 2000.0}),
    "plain": dict(pitch=0.0, range=0.0, rate=1.00, gain=0.0, effects={}),
}
#: ``difficulty`` the demo corpus is rendered with
DEMO_DIFFICULTY = 0.5
#: per-clip ``intensity`` range of the shipped demo model's corpus (docs/demo_model.md, run "a5")
DEMO_INTENSITY = (0.25, 1.0)

_RECIPE_KEYS = ("gain", "pitch", "range", "rate")
#: voice-quality effects a recipe may name (value: treble/presence boost dB, overdrive amount, lowpass cutoff Hz,
#: tremolo Hz)
EFFECTS = ("treble", "lowpass", "overdrive", "tremolo", "presence")

#: espeak voices (language + variant) the speakers are drawn from.
# ---------------------------------------------------------------------------------------------- effects
def _fir_lowpass(cutoff: float, sr: int, taps: int = 63) -> np.ndarray:
    n = np.arange(taps) - (taps - 1) / 2
    h = np.sinc(2 * cutoff / sr * n) * np.hamming(taps)
    return h / h.sum()


def lowpass(x: np.ndarray, cutoff: float, sr: int) -> np.ndarray:
    return np.convolve(x, _fir_lowpass(cutoff, sr), mode="same")


def treble(x: np.ndarray, db: float, sr: int, corner: float = 3000.0) -> np.ndarray:
    """High-shelf boost of ``db`` above ``corner`` Hz."""
    low = lowpass(x, corner, sr)
    return low + (x - low) * 10 ** (db / 20)


def presence(x: np.ndarray, db: float, sr: int, low: float = 1000.0, high: float = 2500.0) -> np.ndarray:
    """Boost of ``db`` on the ``low``-``high`` Hz band (the "presence" region of a voice)."""
    band = lowpass(x, high, sr) - lowpass(x, low, sr)
    return x + band * (10 ** (db / 20) - 1)


def overdrive(x: np.ndarray, amount: float) -> np.ndarray:
    k = 1.0 + 4.0 * amount
    peak = np.max(np.abs(x)) + 1e-9
    return np.tanh(k * x / peak) / np.tanh(k) * peak


def tremolo(x: np.ndarray, freq: float, sr: int, depth: float = 0.35) -> np.ndarray:
    t = np.arange(x.size) / sr
    return x * (1.0 - depth * 0.5 * (1 + np.sin(2 * np.pi * freq * t)))


#: effect name -> (signal, value, sample rate) -> signal; :data:`EFFECTS` lists its keys
_EFFECT_FNS = {"treble": treble, "lowpass": lowpass, "overdrive": lambda x, amount, sr: overdrive(x, amount),
               "tremolo": tremolo, "presence": presence}
assert tuple(_EFFECT_FNS) == EFFECTS


def scale_recipe(recipe: dict, intensity: float) -> dict:
    """``recipe`` at ``intensity`` (0 = plain speech of the speaker, 1 = the recipe as written): pitch, range
    and gain offsets scale linearly, the rate factor geometrically, and voice-quality effects are mixed
    wet/dry (the ``"mix"`` key, read by :func:`render_clip`).

    Example: ``scale_recipe(DEMO_RECIPES["sad"], 0.5)["pitch"]`` -> ``-6.0``.
    """
    i = float(intensity)
    if not 0.0 <= i <= 1.0:
        raise InputError(f"intensity must be in [0, 1], got {intensity!r}")
    return dict(pitch=recipe["pitch"] * i, range=recipe["range"] * i, rate=float(recipe["rate"]) ** i,
                gain=recipe["gain"] * i, effects=dict(recipe.get("effects", {})), mix=i)


