"""Positions back to time: each audio adapter's ``audio_token_spans`` against its processor (token counts on clips
of known length, the processor's cut) and against the model (a click at a known time: the unit that reads it peaks
at the audio token whose named span holds the click)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from esn_lens import Lens
from esn_lens.errors import InputError
from esn_lens.testing import build_tiny

FAMILIES = ("qwen2_audio", "qwen2_5_omni_thinker", "audio_flamingo3")
SR = 16000


@pytest.fixture(scope="module", params=FAMILIES)
def lens(request):
    model, proc = build_tiny(request.param)
    return Lens(model, proc)


@pytest.mark.parametrize("n", [800, 960, 961, 1281, 8000, 16001, 47999, 100000, 480000, 500000])
def test_spans_count_the_processors_audio_tokens(lens, n):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b = lens.batch([np.full(n, 0.01, np.float32)], ["hi"], sampling_rate=SR, long_audio="truncate")
    spans = lens.adapter.audio_token_spans(n, reach=False)
    assert spans.shape[0] == int(b.masks.audio.sum())
    heard = min(n, 480000) if lens.adapter.name != "audio_flamingo3" else n  # AF3 encodes 30 s windows up to 600 s
    # the spans tile the heard audio from 0; a tail shorter than one token (<= 40 ms + a 10 ms frame) is not encoded
    assert float(spans[0, 0]) == 0.0 and 0 <= heard / SR - float(spans[-1, 1]) < 0.05
    assert bool((spans[1:, 0] == spans[:-1, 1]).all()) and bool((spans[:, 1] > spans[:, 0]).all())


def _local(lens) -> None:
    """Make each audio token depend on its own stretch of audio only: no attention mixing in the audio encoder or in
    decoder layer 0 (what remains is the convolutions' and pooling's local window)."""
    root = lens.adapter.root()
    for name, mod in root.named_modules():
        if name.endswith(("self_attn.out_proj", "self_attn.o_proj")) and (
                "audio_tower" in name or name.endswith("layers.0.self_attn.o_proj")):
            torch.nn.init.zeros_(mod.weight)
            if mod.bias is not None:
                torch.nn.init.zeros_(mod.bias)


@pytest.mark.parametrize("click_s", [0.3125, 0.61, 1.1])
def test_a_click_peaks_in_the_span_the_adapter_names(lens, click_s):
    _local(lens)
    t = np.arange(int(1.5 * SR)) / SR
    base = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    click = base.copy()
    c = int(click_s * SR)
    click[c:c + 8] += 0.6
    acts = []
    for audio in (base, click):
        b = lens.batch([audio], ["hi"], sampling_rate=SR)
        with lens.trace(b):
            a = lens.blocks[0].mlp.hook_act.output.save()
        acts.append(a.detach()[0][b.masks.audio[0]])
    delta = (acts[1] - acts[0]).abs()  # (audio token, neuron)
    unit = int(delta.sum(0).argmax())  # the unit that reads the click most (chosen without looking at positions)
    peak = int(delta[:, unit].argmax())
    spans = lens.adapter.audio_token_spans(base.size)
    lo, hi = spans[peak].tolist()
    assert lo <= c / SR < hi, (peak, lo, hi)
    # tokens whose named span misses the click change by < 10 % of the peak (only the features' global
    # normalisation reaches them)
    far = (spans[:, 1] <= c / SR) | (spans[:, 0] > (c + 8) / SR)
    assert far.sum() > 20 and float(delta[far, unit].max()) < 0.1 * float(delta[peak, unit])


def test_a_text_model_has_no_time_map():
    model, tok = build_tiny("qwen2")
    with pytest.raises(InputError, match="no map from audio tokens to time"):
        Lens(model, tok).adapter.audio_token_spans(16000)
