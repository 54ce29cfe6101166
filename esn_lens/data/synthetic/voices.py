"""Voices of the synthetic corpus: libespeak-ng (from the ``espeakng-loader`` wheel, GPL-3) driven through ctypes,
and speakers (accent x variant, pitch and rate baselines)."""
from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import InputError

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


