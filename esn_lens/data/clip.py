"""EmotionClip: one labelled utterance, with its audio read lazily, and audio validation."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import InputError


#: Float audio louder than this (24 dB over full scale) is refused as mis-scaled; (1, 16] is accepted as is.
MAX_FLOAT_PEAK = 16.0


def prepare_audio(audio, sampling_rate: int, target_rate: int | None = None, *, name: str = "audio",
                  resample: bool = True, max_seconds: float | None = None) -> np.ndarray:
    """Validate and normalise one clip to mono float32 in [-1, 1] at ``target_rate``.

    Accepts int16/int32/float32/float64 arrays or torch tensors, mono ``(time,)`` or multi-channel
    ``(time, channels)`` / ``(channels, time)`` (multi-channel is refused: pass ``downmix``-ed audio).
    Raises :class:`InputError` naming ``name`` for empty, NaN/inf, multi-channel, or wrong-rate audio
    (when ``resample`` is False), and for float audio peaking above :data:`MAX_FLOAT_PEAK` (mis-scaled).
    Resampling uses soxr.

    Example: ``prepare_audio(np.zeros(1600, np.int16), 16000, 16000).dtype == np.float32``.
    """
    try:
        import torch

        if isinstance(audio, torch.Tensor):
            audio = audio.detach().cpu()
            audio = (audio.float() if audio.dtype == torch.bfloat16 else audio).numpy()  # numpy has no bfloat16
    except ImportError:  # pragma: no cover
        pass
    a = np.asarray(audio)
    if a.dtype.kind not in "iuf":
        raise InputError(f"{name}: expected a numeric audio array, got dtype {a.dtype}")
    if a.ndim == 2 and 1 in a.shape:
        a = a.reshape(-1)
    if a.ndim != 1:
        raise InputError(f"{name}: expected mono audio of shape (time,), got shape {a.shape}; "
                         "downmix multi-channel audio first (e.g. audio.mean(axis=-1))")
    if a.size == 0:
        raise InputError(f"{name}: audio is empty (0 samples)")
    if a.dtype.kind in "iu":
        info = np.iinfo(a.dtype)
        a = a.astype(np.float32) / float(max(abs(info.min), info.max))
    else:
        if not np.all(np.isfinite(a)):
            raise InputError(f"{name}: audio contains NaN or inf samples")
        peak = float(np.abs(a).max())
        if peak > MAX_FLOAT_PEAK:
            raise InputError(f"{name}: float audio peaks at {peak:.4g}, expected samples in [-1, 1] (at most "
                             f"{MAX_FLOAT_PEAK:g}); integer PCM stored as float? pass the int16 array or divide by 32768")
        a = a.astype(np.float32)
    if not isinstance(sampling_rate, (int, np.integer)) or sampling_rate <= 0:
        raise InputError(f"{name}: sampling rate must be a positive integer, got {sampling_rate!r}")
    if target_rate is not None and sampling_rate != target_rate:
        if not resample:
            raise InputError(f"{name}: sampling rate {sampling_rate} Hz, expected {target_rate} Hz "
                             "(resample first, or pass resample=True)")
        import soxr

        n_in = a.size
        a = soxr.resample(a, sampling_rate, target_rate).astype(np.float32)
        if a.size == 0:
            raise InputError(f"{name}: {n_in} sample(s) at {sampling_rate} Hz is empty after resampling to {target_rate} Hz")
    if max_seconds is not None and target_rate is not None and a.size > max_seconds * target_rate:
        a = a[: int(max_seconds * target_rate)]
    return a


@dataclass
class EmotionClip:
    """One labelled clip. Audio is either held (``audio``) or read on demand from ``path``.

    Example: ``EmotionClip("c1", "angry", audio=np.zeros(16000, np.float32), sampling_rate=16000)``
    """

    utterance_id: str
    emotion: str
    path: str | Path | None = None
    audio: np.ndarray | None = field(default=None, repr=False)
    sampling_rate: int | None = None
    speaker: str = ""
    corpus: str = ""
    text: str = ""
    raw_label: str = ""
    loader: Callable[["EmotionClip"], tuple[np.ndarray, int]] | None = field(default=None, repr=False, compare=False)

    def load(self, target_rate: int | None = None) -> tuple[np.ndarray, int]:
        """Return ``(mono float32 audio, rate)``, read from disk if needed and resampled to ``target_rate``."""
        if self.audio is not None:
            a, sr = self.audio, self.sampling_rate
            if sr is None:
                raise InputError(f"clip {self.utterance_id}: audio given without a sampling rate")
        elif self.loader is not None:
            a, sr = self.loader(self)
        elif self.path is not None:
            import soundfile as sf

            try:
                a, sr = sf.read(str(self.path), dtype="float32", always_2d=False)
            except Exception as e:  # soundfile raises several types for bad files
                raise InputError(f"clip {self.utterance_id}: cannot read audio file {self.path} ({e})") from None
            if a.ndim == 2:
                a = a.mean(axis=1)
        else:
            raise InputError(f"clip {self.utterance_id}: has neither audio nor a path")
        out = prepare_audio(a, int(sr), target_rate, name=f"clip {self.utterance_id}")
        return out, (target_rate or int(sr))
