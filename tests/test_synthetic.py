"""The synthetic emotional-speech corpus: determinism, manifest layout, measurable prosodic differences."""
import csv

import numpy as np
import pytest

pytest.importorskip("espeakng_loader")

from esn_lens.data.synthetic import RECIPES, generate_corpus, make_speakers, prosodic_features  # noqa: E402


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn")
    info = generate_corpus(root / "a", n_per_emotion_per_speaker=4, speakers=4, seed=3)
    return root, info


def test_manifest_layout(corpus):
    root, info = corpus
    rows = list(csv.DictReader(open(root / "a" / "manifest.csv")))
    assert info["clips"] == len(rows) == 4 * 4 * 4
    assert list(rows[0]) == ["path", "emotion", "speaker", "utterance_id", "text"]
    assert {r["emotion"] for r in rows} == {"angry", "happy", "neutral", "sad"}
    assert len({r["speaker"] for r in rows}) == 4
    assert len({r["utterance_id"] for r in rows}) == len(rows)
    import soundfile as sf

    for r in rows[:5]:
        x, sr = sf.read(root / "a" / r["path"], dtype="int16")
        assert sr == 16000 and x.ndim == 1 and 0.5 * sr < x.size < 6 * sr
        assert r["text"]
    # every emotion speaks the same sentences (lexically neutral)
    texts = {e: sorted(r["text"] for r in rows if r["emotion"] == e) for e in ("angry", "sad")}
    assert texts["angry"] == texts["sad"]


def test_manifest_loader_reads_it(corpus):
    from esn_lens.data.loaders.csv_manifest import manifest

    root, _ = corpus
    recs = [r for r in manifest(root / "a") if hasattr(r, "path")]
    assert len(recs) == 64


def test_deterministic_by_seed(tmp_path):
    for name, seed in (("b", 3), ("c", 3), ("d", 4)):
        generate_corpus(tmp_path / name, n_per_emotion_per_speaker=1, speakers=2, seed=seed)
    rows = list(csv.DictReader(open(tmp_path / "b" / "manifest.csv")))
    for r in rows:
        assert (tmp_path / "b" / r["path"]).read_bytes() == (tmp_path / "c" / r["path"]).read_bytes()
    assert (tmp_path / "b" / "manifest.csv").read_bytes() == (tmp_path / "c" / "manifest.csv").read_bytes()
    rows_d = list(csv.DictReader(open(tmp_path / "d" / "manifest.csv")))
    assert any((tmp_path / "b" / a["path"]).read_bytes() != (tmp_path / "d" / b["path"]).read_bytes()
               for a, b in zip(rows, rows_d))


def test_classes_differ_in_prosody(corpus):
    import soundfile as sf

    root, _ = corpus
    rows = list(csv.DictReader(open(root / "a" / "manifest.csv")))
    feats = {e: [] for e in RECIPES}
    for r in rows:
        x, sr = sf.read(root / "a" / r["path"], dtype="float32")
        feats[r["emotion"]].append(prosodic_features(x, sr, r["text"]))
    f = {e: np.array(v) for e, v in feats.items() if v}
    assert f["sad"][:, 7].mean() < f["happy"][:, 7].mean() - 0.1  # spectral centroid (kHz): sad darker
    assert f["sad"][:, 8].mean() < f["angry"][:, 8].mean() - 1.0  # high-band energy: lowpass vs treble
    assert f["sad"][:, 6].mean() > f["angry"][:, 6].mean()  # duration per character: sad speaks slower


def test_flac_and_errors(tmp_path):
    from esn_lens.errors import InputError

    info = generate_corpus(tmp_path / "f", n_per_emotion_per_speaker=1, speakers=1, emotions=("sad", "fearful"),
                           audio_format="flac")
    assert info["clips"] == 2 and all(p.suffix == ".flac" for p in (tmp_path / "f").rglob("*.flac"))
    with pytest.raises(InputError, match="no synthetic recipe"):
        generate_corpus(tmp_path / "g", emotions=("bored",))
    assert len({s.voice for s in make_speakers(40)}) == 40


def test_custom_recipes(tmp_path):
    """A recipe book overrides the default: the same speaker and seed without a voice-quality effect differ
    from the default recipe only through that effect; malformed recipes are refused by name."""
    import copy

    import soundfile as sf

    from esn_lens.errors import InputError

    book = copy.deepcopy(RECIPES)
    book["angry"]["effects"] = {}
    kw = dict(n_per_emotion_per_speaker=1, speakers=1, emotions=("angry",), seed=5)
    generate_corpus(tmp_path / "default", **kw)
    generate_corpus(tmp_path / "plain", recipes=book, **kw)
    rows = list(csv.DictReader(open(tmp_path / "plain" / "manifest.csv")))
    x_def, sr = sf.read(tmp_path / "default" / rows[0]["path"], dtype="float32")
    x_plain, _ = sf.read(tmp_path / "plain" / rows[0]["path"], dtype="float32")
    hi_def, hi_plain = (prosodic_features(x, sr, rows[0]["text"])[8] for x in (x_def, x_plain))
    assert hi_def > hi_plain + 1.0  # overdrive + treble add high-band energy
    with pytest.raises(InputError, match="no synthetic recipe"):
        generate_corpus(tmp_path / "x", recipes={"calm": RECIPES["neutral"]}, emotions=("angry",))
    with pytest.raises(InputError, match="keys"):
        generate_corpus(tmp_path / "y", recipes={"angry": {"pitch": 1.0}}, emotions=("angry",))
    with pytest.raises(InputError, match="keys"):
        generate_corpus(tmp_path / "z", recipes={"angry": dict(RECIPES["angry"], effects={"reverb": 1.0})},
                        emotions=("angry",))
    with pytest.raises(InputError, match="keys"):
        generate_corpus(tmp_path / "w", recipes={"angry": "loud"}, emotions=("angry",))
    no_effects = {k: v for k, v in RECIPES["neutral"].items() if k != "effects"}  # 'effects' may be left out
    assert generate_corpus(tmp_path / "v", recipes={"calm": no_effects}, emotions=("calm",), speakers=1,
                           n_per_emotion_per_speaker=1)["clips"] == 1


def test_presence_boosts_only_its_band():
    """``presence`` raises a 1.5 kHz tone by the requested dB and leaves 300 Hz and 5 kHz tones as they were."""
    from esn_lens.data.synthetic import presence

    sr = 22050
    t = np.arange(sr) / sr

    def gain_db(freq: float) -> float:
        x = np.sin(2 * np.pi * freq * t)
        y = presence(x, 9.0, sr)
        core = slice(1000, -1000)  # away from the FIR's edges
        return 20 * np.log10(np.sqrt(np.mean(y[core] ** 2)) / np.sqrt(np.mean(x[core] ** 2)))

    assert gain_db(1500.0) == pytest.approx(9.0, abs=0.5)
    assert abs(gain_db(300.0)) < 0.5
    assert abs(gain_db(5000.0)) < 0.5
