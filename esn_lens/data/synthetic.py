"""A synthetic emotional-speech corpus: espeak-ng speech with emotion-specific prosody and voice quality.

Every emotion speaks the same lexically neutral sentences; classes differ only in prosody (pitch
offset and range, rate, gain) and voice quality (treble, lowpass, overdrive, tremolo), relative to a
random per-speaker baseline, with per-clip jitter scaled by ``difficulty``, level changes and white
noise at 15-40 dB SNR. Deterministic by seed (same bytes for the same arguments).

espeak-ng (GPL-3) comes from the optional ``espeakng-loader`` wheel (``pip install esn-lens[speech]``)
and is loaded lazily through ctypes inside :func:`generate_corpus`; nothing else in the library needs it.

Example::

    from esn_lens.data.synthetic import generate_corpus
    info = generate_corpus("corpus/", n_per_emotion_per_speaker=10, speakers=8)
    # corpus/manifest.csv: path,emotion,speaker,utterance_id,text  (read it with the "manifest" loader)
"""
from __future__ import annotations

import csv
import ctypes
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import InputError

#: Lexically neutral sentences, spoken by every emotion class.
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
ACCENTS = ("en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc")
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "adam", "linda", "john",
            "edward", "belinda", "david", "grandma", "ian", "max", "aunty", "boris", "michel")

# espeak_PARAMETER
_RATE, _VOLUME, _PITCH, _RANGE = 1, 2, 3, 4
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class _Espeak:
    """A process-wide handle on libespeak-ng (bundled by espeakng-loader), synchronous synthesis."""

    _instance: "_Espeak | None" = None

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError:
            raise InputError("synthetic speech needs espeak-ng: pip install 'esn-lens[speech]' (espeakng-loader, "
                             "GPL-3 licensed, kept optional)") from None
        # espeak-ng keeps wave-generation state (e.g. the flutter phase) across utterances and a re-initialise
        # does not reset it; a private copy of the library gives every corpus a fresh state (determinism).
        import shutil
        import tempfile

        self._tmp = tempfile.TemporaryDirectory(prefix="esn_espeak_")
        lib_copy = Path(self._tmp.name) / "libespeak-ng-private.so"
        shutil.copyfile(espeakng_loader.get_library_path(), lib_copy)
        self.lib = ctypes.CDLL(str(lib_copy), mode=getattr(ctypes, "RTLD_LOCAL", 0))
        self.lib.espeak_Initialize.restype = ctypes.c_int
        self.lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        rate = self.lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0,
                                          espeakng_loader.get_data_path().encode(), 0)
        if rate <= 0:
            raise InputError(f"espeak-ng failed to initialise (returned {rate})")
        self.rate = int(rate)
        self._chunks: list[np.ndarray] = []

        def collect(wav, n, events):  # noqa: ARG001
            if n > 0 and wav:
                self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            return 0

        self._cb = _CALLBACK(collect)  # keep a reference: ctypes would free it
        self.lib.espeak_SetSynthCallback(self._cb)
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self.lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                          ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]

    @classmethod
    def get(cls, fresh: bool = False) -> "_Espeak":
        """The shared handle; ``fresh=True`` loads a new private copy (clean synthesis state)."""
        if cls._instance is None or fresh:
            cls._instance = cls()
        return cls._instance

    def synth(self, text: str, voice: str, *, rate: int, pitch: int, range_: int, volume: int = 100,
              seed: int = 0) -> np.ndarray:
        """int16 samples at :attr:`rate` Hz."""
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise InputError(f"espeak-ng has no voice {voice!r}")
        for p, v in ((_RATE, rate), (_PITCH, pitch), (_RANGE, range_), (_VOLUME, volume)):
            self.lib.espeak_SetParameter(p, int(v), 0)
        self._chunks = []
        self.lib.espeak_ng_SetRandSeed(ctypes.c_long(seed))  # espeak draws noise/jitter with rand()
        data = text.encode() + b"\0"
        # flags: espeakCHARS_AUTO (0) | espeakENDPAUSE (0x1000)
        err = self.lib.espeak_Synth(data, len(data), 0, 0, 0, 0x1000, None, None)
        if err != 0:
            raise InputError(f"espeak-ng synthesis failed (error {err}) for {text!r}")
        self.lib.espeak_Synchronize()
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)


@dataclass(frozen=True)
class Speaker:
    """A synthetic speaker: an espeak voice and a baseline of native parameters."""

    name: str
    voice: str
    pitch: float   # espeak pitch 0-99
    range: float   # espeak range 0-99
    rate: float    # words per minute


def make_speakers(n: int, seed: int = 0) -> list[Speaker]:
    """``n`` distinct speakers (accent x variant, baseline pitch/range/rate), deterministic by seed."""
    rng = np.random.default_rng([seed, 7919])
    combos = [(a, v) for v in VARIANTS for a in ACCENTS]
    order = rng.permutation(len(combos))
    out = []
    for i in range(n):
        a, v = combos[order[i % len(combos)]]
        out.append(Speaker(f"spk{i:03d}", f"{a}+{v}", float(rng.uniform(30, 60)), float(rng.uniform(35, 65)),
                           float(rng.uniform(150, 190))))
    return out


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


# ---------------------------------------------------------------------------------------------- separability
def prosodic_features(x: np.ndarray, sr: int = 16000, text: str = "") -> np.ndarray:
    """A small prosodic feature vector: log-f0 mean/sd/range (autocorrelation), voiced ratio, energy
    mean/sd (dB, relative to the clip), rate proxy (duration per character), spectral centroid, high-band
    energy ratio, zero-crossing rate and frame-energy modulation."""
    frame, hop = int(0.04 * sr), int(0.01 * sr)
    n = 1 + max(0, (x.size - frame) // hop)
    idx = np.arange(frame)[None, :] + hop * np.arange(n)[:, None]
    fr = x[np.minimum(idx, x.size - 1)] * np.hanning(frame)
    rms = np.sqrt(np.mean(fr ** 2, axis=1)) + 1e-8
    db = 20 * np.log10(rms)
    active = db > db.max() - 30
    spec = np.abs(np.fft.rfft(fr, n=1024, axis=1)) ** 2
    ac = np.fft.irfft(spec, axis=1)[:, :frame]
    lo, hi = int(sr / 400), int(sr / 60)
    seg = ac[:, lo:hi] / (ac[:, :1] + 1e-12)
    lag = seg.argmax(1) + lo
    strength = seg.max(1)
    voiced = active & (strength > 0.35)
    f0 = np.log(sr / lag[voiced]) if voiced.any() else np.array([np.log(150.0)])
    freqs = np.fft.rfftfreq(1024, 1 / sr)
    ps = spec[active].sum(0) + 1e-12
    centroid = float((freqs * ps).sum() / ps.sum())
    hiratio = float(np.log(ps[freqs > 3000].sum() / ps.sum()))
    zcr = float(np.mean(np.abs(np.diff(np.sign(x))) > 0))
    dur = active.sum() * hop / sr
    d_db = np.diff(db[active]) if active.sum() > 2 else np.zeros(1)
    return np.array([f0.mean(), f0.std(), np.percentile(f0, 90) - np.percentile(f0, 10), voiced.mean(),
                     db[active].mean() - db.max(), db[active].std(), dur / max(len(text), 1) * 10,
                     centroid / 1000, hiratio, zcr * 10, np.abs(d_db).mean() / 10], dtype=np.float64)


def separability(out_dir: str | Path, test_speakers: int | float = 0.25, seed: int = 0, epochs: int = 500) -> dict:
    """Speaker-held-out accuracy of a logistic regression (torch, L2) on :func:`prosodic_features`.

    Returns ``{"accuracy", "chance", "per_class", "n_train", "n_test"}``.
    """
    import soundfile as sf
    import torch

    rows = list(csv.DictReader(open(Path(out_dir) / "manifest.csv")))
    feats, labels, spks = [], [], []
    for r in rows:
        x, sr = sf.read(Path(out_dir) / r["path"], dtype="float32")
        feats.append(prosodic_features(x, sr, r["text"]))
        labels.append(r["emotion"])
        spks.append(r["speaker"])
    emos = sorted(set(labels))
    speakers = sorted(set(spks))
    rng = np.random.default_rng(seed)
    k = test_speakers if isinstance(test_speakers, int) else max(1, round(test_speakers * len(speakers)))
    test = set(rng.choice(speakers, size=k, replace=False).tolist())
    X = np.stack(feats)
    y = np.array([emos.index(l) for l in labels])
    te = np.array([s in test for s in spks])
    mu, sd = X[~te].mean(0), X[~te].std(0) + 1e-9
    Xt = torch.tensor((X - mu) / sd, dtype=torch.float32)
    yt = torch.tensor(y)
    lin = torch.nn.Linear(X.shape[1], len(emos))
    opt = torch.optim.LBFGS(lin.parameters(), max_iter=epochs)
    tr_idx = torch.tensor(np.flatnonzero(~te))

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(lin(Xt[tr_idx]), yt[tr_idx]) + 1e-3 * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    pred = lin(Xt).argmax(1).numpy()
    acc = float((pred[te] == y[te]).mean())
    per = {e: float((pred[te & (y == i)] == i).mean()) for i, e in enumerate(emos)}
    return {"accuracy": acc, "chance": 1 / len(emos), "per_class": per, "n_train": int((~te).sum()),
            "n_test": int(te.sum()), "train_accuracy": float((pred[~te] == y[~te]).mean())}
