"""MOSS-Transcribe-Diarize beyond the common family tests (tests/test_families.py): the time markers its processor
writes inside the audio span, a clip longer than one 30 s encoder chunk, and the reuse of the decoder's input
embeddings across conditions."""
from __future__ import annotations

import pytest
import torch

from esn_lens import deactivate
from esn_lens.lens import Lens
from esn_lens.testing import build_tiny, tiny_audio

PROMPTS = ["Which emotion is it?", "Name the emotion"]


@pytest.fixture(scope="module")
def lens():
    model, proc = build_tiny("moss_transcribe_diarize", seed=19)
    return Lens(model, proc)


def test_time_markers_are_neither_audio_nor_prompt_text(lens):
    """A 4.5 s clip's span holds the markers ``2`` and ``4`` (every 2 s) between its audio tokens: they are not audio,
    not special and not the user's prompt; the prompt text is exactly the question."""
    b = lens.batch([tiny_audio(4.5, seed=3), tiny_audio(0.5)], PROMPTS, sampling_rate=16000)
    tok, ids, m = lens.tokenizer, b.inputs["input_ids"], b.masks
    bos, eos = (ids == tok.convert_tokens_to_ids(t) for t in ("<|audio_bos|>", "<|audio_eos|>"))
    span = ((bos.long().cumsum(1) - eos.long().cumsum(1)) > 0) & ~bos
    markers = span & ~m.audio
    assert tok.decode(ids[0][markers[0]]) == "24" and not markers[1].any()
    assert not (markers & (m.special | m.prompt_text | m.padding)).any()
    assert m.audio.sum(1).tolist() == [57, 7]  # ceil(12.5 tokens per second), counted by the processor
    for i, p in enumerate(PROMPTS):
        assert tok.decode(ids[i][m.prompt_text[i]]).strip() == p


def test_a_clip_over_30_s_is_encoded_in_chunks_and_rows_equal_rows_alone(lens):
    """A 31 s clip is two encoder chunks; batched with a 1 s clip, each row's logits equal that row alone."""
    auds = [tiny_audio(31.0, seed=4), tiny_audio(1.0, freq=300)]
    b = lens.batch(auds, PROMPTS, sampling_rate=16000)
    assert b.inputs["input_features"].shape[0] == 3  # chunks: 2 + 1
    full = lens.run(b, logits="all").logits
    for row in range(2):
        alone = lens.run(lens.batch([auds[row]], PROMPTS[row], sampling_rate=16000), logits="all").logits[0]
        assert torch.allclose(full[row][~b.masks.padding[row]], alone, atol=1e-5)


def test_conditions_reusing_the_input_embeddings_equal_a_rerun(lens):
    """The SER evaluator's encoder reuse (the decoder's input embeddings kept once, tiled over conditions) gives the
    logits of running every condition from the audio."""
    b = lens.batch([tiny_audio(0.6, seed=5), tiny_audio(1.1, freq=240)], PROMPTS, sampling_rate=16000)
    audio = lens.run(b, logits="none", keep_audio=True).audio
    assert audio.kind == "embeds"
    u = torch.zeros(lens.n_layers, lens.d_mlp, dtype=torch.bool)
    u[1, :24] = True
    tiled = b.tile(2)
    rerun = lens.run(tiled, edits=[deactivate(u)], logits="last").logits
    reused = lens.run(tiled, edits=[deactivate(u)], audio_cache=audio, logits="last").logits
    assert torch.allclose(rerun, reused, atol=1e-5) and not torch.allclose(rerun, lens.run(tiled).logits, atol=1e-4)
