"""Positions back to time: which samples of a clip each of its audio tokens was computed from (an adapter mix-in;
each family sets its frame rate, window and reach as class attributes, or overrides :meth:`window_tokens`)."""
from __future__ import annotations

from typing import ClassVar

import torch
from jaxtyping import Float
from torch import Tensor

from ..errors import InputError


class AudioTimeMap:
    """Audio-token positions -> seconds of the waveform. Needs ``name``, ``sampling_rate`` and ``max_audio_seconds``
    from the adapter it is mixed into."""

    #: waveform samples behind one audio token (feature hop x encoder stride x pooling; Whisper-style: 160 x 2 x 2)
    #: and the processor's window (it encodes longer audio window by window); None: no time map for this family
    audio_token_samples: ClassVar[int | None] = None
    audio_window_samples: ClassVar[int] = 480000
    #: samples before / after its tile that a token still reads (Whisper-style: 25 ms window, two k=3 convolutions)
    audio_token_reach: ClassVar[tuple[int, int]] = (520, 200)

    def audio_token_spans(self, n_samples: int, *, reach: bool = True) -> Float[Tensor, "token 2"]:
        """``[start, end)`` seconds of a clip of ``n_samples`` (at :attr:`sampling_rate`) behind each of its audio
        tokens, in order, window by window (cut at the clip's end and at :attr:`max_audio_seconds`). ``reach=False``:
        the tiling, :attr:`audio_token_samples` per token; ``reach=True``: the samples the token is computed from
        (the tile widened by :attr:`audio_token_reach`: feature window and convolutions; attention aside).
        Example (Whisper-style, 16 kHz): token 3 of a 1 s clip tiles 0.12-0.16 s and reads 0.0875-0.1725 s."""
        if self.audio_token_samples is None:
            raise InputError(f"{self.name}: this adapter has no map from audio tokens to time (audio_token_samples)")
        sr, hop = self.sampling_rate, self.audio_token_samples
        before, after = self.audio_token_reach if reach else (0, 0)
        if self.max_audio_seconds is not None:
            n_samples = min(int(n_samples), int(self.max_audio_seconds * sr))
        n_samples = min(int(n_samples), self.audio_window_samples * self.audio_windows())
        spans = []
        for w0 in range(0, n_samples, self.audio_window_samples):  # one step per processor window
            m = min(self.audio_window_samples, n_samples - w0)
            start = hop * torch.arange(self.window_tokens(m), dtype=torch.float64)
            spans.append(torch.stack([(start - before).clamp(min=0), (start + hop + after).clamp(max=m)], 1) + w0)
        return (torch.cat(spans) if spans else torch.zeros(0, 2, dtype=torch.float64)) / sr

    def audio_windows(self) -> int:
        """How many windows of a clip the processor encodes (the rest is cut); one by default."""
        return 1

    def window_tokens(self, n_samples: int) -> int:
        """Audio tokens of one processor window of ``n_samples`` (Whisper-style: 10 ms frames, stride-2 conv, pool 2)."""
        frames = -(-int(n_samples) // 160)
        return max(0, ((frames - 1) // 2 + 1 - 2) // 2 + 1)
