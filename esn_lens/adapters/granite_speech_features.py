"""Granite Speech's log-mel features in plain torch, for machines without torchaudio.

transformers' ``GraniteSpeechFeatureExtractor`` computes its features with ``torchaudio.transforms.MelSpectrogram``
(and refuses to build without torchaudio); the model itself does not need torchaudio. ``TorchGraniteSpeechFeatureExtractor``
is that class with only the torchaudio parts replaced by the same computation in torch: a power spectrogram
(``torch.stft``, periodic Hann window of ``win_length`` centred in ``n_fft``, ``center=True``, reflect padding) times
an HTK mel filter bank without normalisation (torchaudio's ``melscale_fbanks``), then the extractor's own
``log10(max(mel, 1e-10))``, ``max(logmel, clip_max - 8) / 4 + 1``, odd last frame dropped and frame pairs stacked. The
number of ``<|audio|>`` tokens per clip (``audio_embed_sizes``) is the parent's formula, unchanged.
"""
from __future__ import annotations

import functools
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor


def htk_mel_filter_bank(n_freqs: int, n_mels: int, sample_rate: int, f_min: float = 0.0,
                        f_max: float | None = None) -> Float[Tensor, "n_freqs n_mels"]:
    """Triangular HTK-scale mel filters without normalisation, as torchaudio's ``melscale_fbanks(norm=None,
    mel_scale="htk")``: peaks equally spaced in mel between ``f_min`` and ``f_max`` (default ``sample_rate / 2``),
    evaluated at ``n_freqs`` frequencies evenly spaced from 0 to ``sample_rate // 2``."""
    f_max = float(sample_rate // 2) if f_max is None else f_max
    all_freqs = torch.linspace(0, sample_rate // 2, n_freqs)

    def hz_to_mel(f: float) -> float:
        return 2595.0 * float(torch.log10(torch.tensor(1.0 + f / 700.0)))

    m_pts = torch.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2)
    f_pts = 700.0 * (10.0 ** (m_pts / 2595.0) - 1.0)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)  # (n_freqs, n_mels + 2)
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    return torch.clamp(torch.minimum(down, up), min=0.0)


class TorchMelSpectrogram(torch.nn.Module):
    """``torchaudio.transforms.MelSpectrogram(sample_rate, n_fft, win_length, hop_length, n_mels)`` with its defaults
    (power 2, centred frames, reflect padding, periodic Hann window, HTK filters, no normalisation), in torch alone."""

    def __init__(self, sample_rate: int, n_fft: int, win_length: int, hop_length: int, n_mels: int):
        super().__init__()
        self.n_fft, self.win_length, self.hop_length = n_fft, win_length, hop_length
        self.register_buffer("window", torch.hann_window(win_length), persistent=False)
        self.register_buffer("fb", htk_mel_filter_bank(n_fft // 2 + 1, n_mels, sample_rate), persistent=False)

    def forward(self, audio: Float[Tensor, "batch samples"]) -> Float[Tensor, "batch n_mels frames"]:
        """Mel power spectrogram, ``1 + samples // hop_length`` frames per clip."""
        spec = torch.stft(audio, self.n_fft, self.hop_length, self.win_length, self.window, center=True,
                          pad_mode="reflect", normalized=False, onesided=True, return_complex=True).abs().pow(2.0)
        return torch.matmul(spec.transpose(-1, -2), self.fb).transpose(-1, -2)


@functools.lru_cache(maxsize=None)
def torch_granite_feature_extractor_class() -> type:
    """``TorchGraniteSpeechFeatureExtractor``: transformers' ``GraniteSpeechFeatureExtractor`` computing its log-mel
    features with :class:`TorchMelSpectrogram` instead of torchaudio (``GraniteSpeechProcessor`` accepts it)."""
    from transformers import BatchFeature, GraniteSpeechFeatureExtractor
    from transformers.feature_extraction_sequence_utils import SequenceFeatureExtractor

    class TorchGraniteSpeechFeatureExtractor(GraniteSpeechFeatureExtractor):
        """``GraniteSpeechFeatureExtractor`` without torchaudio (same parameters, features and token counts)."""

        def __init__(self, sampling_rate: int = 16000, n_fft: int = 512, win_length: int = 400, hop_length: int = 160,
                     n_mels: int = 80, projector_window_size: int = 15, projector_downsample_rate: int = 5,
                     padding_value: float = 0.0, **kwargs: Any):
            feature_size = n_mels if kwargs.get("feature_size") is None else kwargs.pop("feature_size")
            kwargs.pop("feature_extractor_type", None)
            SequenceFeatureExtractor.__init__(self, feature_size=feature_size, sampling_rate=sampling_rate,
                                              padding_value=padding_value, **kwargs)
            self.sampling_rate = sampling_rate
            self.melspec_kwargs = dict(sample_rate=sampling_rate, n_fft=n_fft, win_length=win_length,
                                       hop_length=hop_length, n_mels=n_mels)
            self.mel_filters = TorchMelSpectrogram(**self.melspec_kwargs)
            self.projector_window_size = projector_window_size
            self.projector_downsample_rate = projector_downsample_rate

        def __call__(self, audios: Any, device: str | None = "cpu") -> BatchFeature:
            """``input_features`` (batch, frames // 2, 2 * n_mels), ``audio_embed_sizes`` (tokens per clip) and
            ``input_features_mask`` (batch, max tokens), as the parent returns them."""
            batched, lengths = self._get_audios_and_audio_lengths(audios)
            sizes = self._get_num_audio_features(lengths)
            mask = torch.arange(max(sizes)).view(1, -1) < torch.tensor(sizes).view(-1, 1)
            return BatchFeature(data=dict(input_features=self._extract_mel_spectrograms(batched, device=device),
                                          audio_embed_sizes=sizes, input_features_mask=mask))

        def _extract_mel_spectrograms(self, audio: Tensor, device: str | None = "cpu") -> Tensor:
            melspec = self.mel_filters if device is None else self.mel_filters.to(device)
            audio = audio if device is None else audio.to(device)
            with torch.no_grad():
                logmel = melspec(audio.float()).transpose(-1, -2).clip_(min=1e-10).log10_()
                mx = logmel.amax(dim=(-2, -1), keepdim=True)
                logmel = torch.maximum(logmel, mx - 8.0).div_(4).add_(1)
                if logmel.shape[1] % 2 == 1:  # drop the last frame if odd, then stack frame pairs
                    logmel = logmel[:, :-1]
                return logmel.reshape(audio.shape[0], -1, 2 * logmel.shape[-1])

        def to_dict(self) -> dict[str, Any]:
            """The parent's saved form (``feature_extractor_type`` = ``GraniteSpeechFeatureExtractor``): a saved folder
            loads with transformers' own class wherever torchaudio is installed."""
            out = super().to_dict()
            out.pop("mel_filters", None)
            out["feature_extractor_type"] = "GraniteSpeechFeatureExtractor"
            return out

    TorchGraniteSpeechFeatureExtractor.__module__ = __name__
    return TorchGraniteSpeechFeatureExtractor


def granite_feature_extractor_class() -> type:
    """transformers' ``GraniteSpeechFeatureExtractor`` where torchaudio imports, else the torch-only subclass."""
    from transformers.utils import is_torchaudio_available

    if is_torchaudio_available():
        from transformers import GraniteSpeechFeatureExtractor

        return GraniteSpeechFeatureExtractor
    return torch_granite_feature_extractor_class()
