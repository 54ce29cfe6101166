"""EmotionClip: one labelled utterance, with its audio read lazily, and audio validation."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import InputError


#: Float audio louder than this (24 dB over full scale) is refused as mis-scaled; (1, 16] is accepted as is.
MAX_FLOAT_PEAK = 16.0
#: Sampling rates outside this range (Hz) are refused as a damaged header (a WAV claiming 1 Hz).
MIN_RATE, MAX_RATE = 1000, 768000
#: The most seconds of a clip read from disk when the caller gives no limit (the run passes the model's window).
READ_LIMIT_SECONDS = 600.0
#: Files longer than this (after the limit) are read and resampled in blocks of this many seconds.
STREAM_BLOCK_SECONDS = 60


def check_rate(sampling_rate, name: str) -> int:
    """``sampling_rate`` as an int, or :class:`InputError` naming ``name`` (not a positive integer, or outside
    :data:`MIN_RATE`..:data:`MAX_RATE`, e.g. a header claiming 1 Hz)."""
    if isinstance(sampling_rate, bool) or not isinstance(sampling_rate, (int, np.integer)) or sampling_rate <= 0:
        raise InputError(f"{name}: sampling rate must be a positive integer, got {sampling_rate!r}")
    if not MIN_RATE <= sampling_rate <= MAX_RATE:
        raise InputError(f"{name}: sampling rate {int(sampling_rate)} Hz is outside {MIN_RATE}..{MAX_RATE} Hz "
                         "(a damaged or hand-edited header?); resample the file")
    return int(sampling_rate)


def _to_float(a: np.ndarray) -> np.ndarray:
    """Integer PCM to float32 by its real range: signed by full scale, unsigned centred ((x - mid) / mid)."""
    info = np.iinfo(a.dtype)
    if a.dtype.kind == "u":
        mid = (int(info.max) + 1) // 2  # uint8: 128, so 128 -> 0, 0 -> -1, 255 -> 0.992
        return ((a.astype(np.float64) - mid) / mid).astype(np.float32)
    return a.astype(np.float32) / float(max(abs(info.min), info.max))


def prepare_audio(audio, sampling_rate: int, target_rate: int | None = None, *, name: str = "audio",
                  resample: bool = True, max_seconds: float | None = None) -> np.ndarray:
    """Validate and normalise one clip to mono float32 in [-1, 1] at ``target_rate``.

    Accepts integer (signed by full scale, unsigned such as 8-bit PCM centred on its midpoint) and float arrays or torch tensors, mono ``(time,)`` or multi-channel
    ``(time, channels)`` / ``(channels, time)`` (multi-channel is refused: pass ``downmix``-ed audio).
    Raises :class:`InputError` naming ``name`` for empty, NaN/inf, multi-channel, or wrong-rate audio
    (when ``resample`` is False), and for float audio peaking above :data:`MAX_FLOAT_PEAK` (mis-scaled).
    Resampling uses soxr. ``max_seconds`` cuts the audio to that duration *before* converting and resampling
    (memory is bounded by what the model can use); rates outside :data:`MIN_RATE`..:data:`MAX_RATE` are refused.

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
    sampling_rate = check_rate(sampling_rate, name)
    if max_seconds is not None and a.size > max_seconds * sampling_rate + 1:  # cut before converting/resampling
        a = a[: int(np.ceil(max_seconds * sampling_rate)) + 1]
    if a.dtype.kind in "iu":
        a = _to_float(a)
    else:
        if not np.all(np.isfinite(a)):
            raise InputError(f"{name}: audio contains NaN or inf samples")
        peak = float(np.abs(a).max())
        if peak > MAX_FLOAT_PEAK:
            raise InputError(f"{name}: float audio peaks at {peak:.4g}, expected samples in [-1, 1] (at most "
                             f"{MAX_FLOAT_PEAK:g}); integer PCM stored as float? pass the int16 array or divide by 32768")
        a = a.astype(np.float32)
    if target_rate is not None and sampling_rate != target_rate:
        if not resample:
            raise InputError(f"{name}: sampling rate {sampling_rate} Hz, expected {target_rate} Hz "
                             "(resample first, or pass resample=True)")
        import soxr

        n_in = a.size
        a = soxr.resample(a, sampling_rate, target_rate).astype(np.float32)
        if a.size == 0:
            raise InputError(f"{name}: {n_in} sample(s) at {sampling_rate} Hz is empty after resampling to {target_rate} Hz")
    out_rate = target_rate or sampling_rate
    if max_seconds is not None and a.size > max_seconds * out_rate + 1:
        a = a[: int(np.ceil(max_seconds * out_rate)) + 1]
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
    #: sha256 (16 hex) of the decoded audio at 16 kHz (:func:`audio_hash`), set when the clip is screened
    content_hash: str = field(default="", repr=False, compare=False)

    def load(self, target_rate: int | None = None, *, max_seconds: float | None = None) -> tuple[np.ndarray, int]:
        """Return ``(mono float32 audio, rate)``, read from disk if needed and resampled to ``target_rate``.

        At most ``max_seconds`` (default :data:`READ_LIMIT_SECONDS`) are read and resampled: a file is read only
        up to there, so a 10-hour file or a damaged header never allocates more than that.
        """
        limit = READ_LIMIT_SECONDS if max_seconds is None else float(max_seconds)
        name = f"clip {self.utterance_id}"
        if self.audio is not None:
            a, sr = self.audio, self.sampling_rate
            if sr is None:
                raise InputError(f"{name}: audio given without a sampling rate")
        elif self.loader is not None:
            a, sr = self.loader(self)
        elif self.path is not None:
            a, sr = read_audio_file(self.path, target_rate, limit, name)  # resampled when long (streamed)
        else:
            raise InputError(f"{name}: has neither audio nor a path")
        out = prepare_audio(a, int(sr), target_rate, name=name, max_seconds=limit)
        return out, (target_rate or int(sr))


def audio_hash(audio: np.ndarray) -> str:
    """A short content hash of decoded mono float32 audio (the same recording under another id or file name)."""
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(audio, dtype=np.float32).tobytes()).hexdigest()[:16]


def read_audio_file(path: str | Path, target_rate: int | None, max_seconds: float, name: str) -> tuple[np.ndarray, int]:
    """The first ``max_seconds`` of an audio file, downmixed, as ``(float32 audio, rate)`` at ``target_rate`` (or the
    file's rate). Reads and resamples block by block, so memory is bounded by the output, whatever the file's length
    or rate; the header's rate is checked before anything is read."""
    import soundfile as sf

    try:
        with sf.SoundFile(path if hasattr(path, "read") else str(path)) as f:
            sr = check_rate(int(f.samplerate), name)
            frames = f.frames if f.frames > 0 else None
            want = int(np.ceil(max_seconds * sr)) + 1
            want = want if frames is None else min(frames, want)
            block = sr * STREAM_BLOCK_SECONDS
            stream = None
            if target_rate is not None and target_rate != sr:
                import soxr

                if want <= block:  # one call: the same numbers as prepare_audio on the array
                    x = f.read(want, dtype="float32", always_2d=True)
                    return (x.mean(axis=1, dtype=np.float32) if x.shape[1] > 1 else x[:, 0]), sr
                stream = soxr.ResampleStream(sr, target_rate, 1, dtype="float32")
            out_rate = target_rate if stream is not None else sr
            a = np.empty(int(np.ceil(want * out_rate / sr)) + 64, np.float32)  # filled in place: memory = the output
            got = n = 0
            while got < want:
                x = f.read(min(block, want - got), dtype="float32", always_2d=True)
                if x.shape[0] == 0:
                    break
                got += x.shape[0]
                x = x.mean(axis=1, dtype=np.float32) if x.shape[1] > 1 else x[:, 0]
                if not np.all(np.isfinite(x)):
                    raise InputError(f"{name}: audio contains NaN or inf samples")
                if stream is not None:
                    x = stream.resample_chunk(x, last=got >= want)
                a[n:n + x.size] = x[: a.size - n]
                n = min(a.size, n + x.size)
            if stream is not None and got < want:
                tail = stream.resample_chunk(np.zeros(0, np.float32), last=True)
                a[n:n + tail.size] = tail[: a.size - n]
                n = min(a.size, n + tail.size)
    except InputError:
        raise
    except Exception as e:  # soundfile raises several types for bad files
        where = "the audio bytes" if hasattr(path, "read") else f"audio file {path}"
        raise InputError(f"{name}: cannot read {where} ({e})") from None
    a = a[:n]
    if stream is not None and a.size == 0:
        raise InputError(f"{name}: {got} sample(s) at {sr} Hz is empty after resampling to {target_rate} Hz")
    return a, out_rate
