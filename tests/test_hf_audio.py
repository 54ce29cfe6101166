"""Hugging Face datasets with an Audio column: a clear line when torchcodec is missing, and the decode=False route."""
import numpy as np
import pytest
import soundfile as sf

datasets = pytest.importorskip("datasets")

from esn_lens.data import load_dataset  # noqa: E402
from esn_lens.errors import InputError  # noqa: E402


def _ds(tmp_path):
    paths = []
    for i in range(2):
        p = tmp_path / f"c{i}.wav"
        sf.write(p, (0.1 * np.sin(np.arange(8000) / (5 + i))).astype(np.float32), 16000)
        paths.append(str(p))
    ds = datasets.Dataset.from_dict({"audio": paths, "label": ["angry", "sad"], "speaker": ["s0", "s1"]})
    return ds.cast_column("audio", datasets.Audio())


def test_undecodable_audio_column_names_the_missing_package_and_the_route(tmp_path):
    ds = _ds(tmp_path)
    try:
        import torchcodec  # noqa: F401
        pytest.skip("torchcodec is installed: the column decodes")
    except ImportError:
        pass
    corpus = load_dataset("hf", ds, label_column="label", speaker_column="speaker")
    clip = corpus[0]
    with pytest.raises(InputError, match=r"torchcodec.*decode=False"):
        clip.load(16000)
    raw = ds.cast_column("audio", datasets.Audio(decode=False))
    corpus = load_dataset("hf", raw, label_column="label", speaker_column="speaker")
    a, sr = corpus[1].load(16000)
    assert sr == 16000 and a.shape == (8000,)
    expected = (0.1 * np.sin(np.arange(8000) / 6)).astype(np.float32)
    assert np.abs(a - expected).max() < 1e-4


def test_a_clip_longer_than_the_audio_window_is_reported_not_silently_cut():
    import warnings

    from esn_lens.lens import Lens
    from esn_lens.testing import build_tiny, tiny_audio

    model, proc = build_tiny("qwen2_audio")
    lens = Lens(model, proc)
    long, short = tiny_audio(31.0), tiny_audio(0.5)
    with pytest.warns(UserWarning, match=r"clip 0 \(31\.0 s\): longer than qwen2_audio's 30 s audio window"):
        b = lens.batch([long, short], "Which emotion?", sampling_rate=16000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        b2 = lens.batch([long, short], "Which emotion?", sampling_rate=16000, long_audio="truncate")
    import torch
    assert torch.equal(b.inputs["input_features"], b2.inputs["input_features"])
    with pytest.raises(InputError, match="audio window"):
        lens.batch([long], "Which emotion?", sampling_rate=16000, long_audio="error")
