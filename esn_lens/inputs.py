"""Building a :class:`~esn_lens.batch.Batch` from audio and prompts with a model's adapter (its processor and chat
template), validating the audio first."""
from __future__ import annotations

from typing import Any, Sequence

from torch import Tensor

from .batch import Batch, check_context, fit_audio_window
from .data.clip import prepare_audio
from .errors import InputError


def read_seconds(adapter: Any) -> float | None:
    """How much of a clip is read and resampled for this model: its audio window plus 1 s (so a longer clip is still
    seen as long), or None (the clip reader's own limit) for a model that hears everything."""
    window = adapter.max_audio_seconds
    return None if window is None else float(window) + 1.0


def prompts_per_clip(prompt: str | Sequence[str], n: int, where: str) -> list[str]:
    """One prompt per clip: ``prompt`` repeated ``n`` times, or the ``n`` prompts given (else one clear error naming
    ``where``: no clips, or a count that does not match). Example: ``prompts_per_clip("Which emotion?", 2, "batch")``."""
    if n == 0:
        raise InputError(f"{where}: no clips given")
    prompts = [prompt] * n if isinstance(prompt, str) else list(prompt)
    if len(prompts) != n:
        raise InputError(f"{where}: {len(prompts)} prompts for {n} clips (give one, or one per clip)")
    return prompts


def build_batch(adapter: Any, audios: Sequence[Any] | None, prompts: str | Sequence[str], *,
                sampling_rate: int | None = None, labels: Sequence[str] | None = None,
                clip_ids: Sequence[str] | None = None, padding_side: str = "left", system: str | None = None,
                resample: bool = True, long_audio: str = "warn", processor_id: str | None = None) -> Batch:
    """:meth:`esn_lens.Lens.batch`: validated audio -> model inputs and position masks, stamped with ``processor_id``."""
    n = len(audios) if audios is not None else (1 if isinstance(prompts, str) else len(prompts))
    prompts = prompts_per_clip(prompts, n, "batch")
    prepared = None
    if audios is not None:
        if sampling_rate is None:
            raise InputError(f"batch: sampling_rate is required with audio (the model expects {adapter.sampling_rate} Hz)")
        ids = clip_ids or [str(i) for i in range(n)]
        prepared = [prepare_audio(a, sampling_rate, adapter.sampling_rate, name=f"clip {cid}", resample=resample,
                                  max_seconds=read_seconds(adapter)) for a, cid in zip(audios, ids)]
        prepared = fit_audio_window(prepared, ids, adapter, adapter.sampling_rate, long_audio)
    inputs = adapter.build_inputs(prepared, list(prompts), padding_side=padding_side, system=system)
    check_context(inputs, clip_ids or [str(i) for i in range(n)], adapter.config)
    dev = adapter.device
    inputs = {k: (v.to(dev) if isinstance(v, Tensor) else v) for k, v in inputs.items()}
    masks = adapter.position_masks({k: v.cpu() for k, v in inputs.items()})
    if prepared is not None and adapter.audio_token is not None:
        n_audio = masks.audio.sum(1).tolist()
        short = [f"clip {cid} ({a.size / adapter.sampling_rate:.3f} s)" for cid, a, k in zip(ids, prepared, n_audio) if k == 0]
        if short:  # the model would silently see no audio at all
            raise InputError(f"{', '.join(short)}: too short, the model makes no audio tokens from it; "
                             "pad it with silence (about 0.05 s is the shortest usable clip)")
    return Batch(inputs, masks, list(labels) if labels is not None else None,
                 list(clip_ids) if clip_ids else None, processor_id)

