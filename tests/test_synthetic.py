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


def test_intensity_scales_the_recipe(tmp_path):
    """``scale_recipe`` interpolates between plain speech (0) and the recipe (1); a corpus rendered at a graded
    intensity records each clip's level in its manifest, and a clip at intensity 1 is the clip of the ungraded
    corpus, byte for byte. Out-of-range intensities are refused by name."""
    import soundfile as sf

    from esn_lens.data.synthetic import DEMO_RECIPES, scale_recipe
    from esn_lens.errors import InputError

    half = scale_recipe(DEMO_RECIPES["sad"], 0.5)
    assert (half["pitch"], half["range"], half["gain"], half["mix"]) == (-6.0, -0.25, -2.0, 0.5)
    assert half["rate"] == pytest.approx(0.8 ** 0.5)
    assert half["effects"] == {"lowpass": 2000.0}
    zero = scale_recipe(DEMO_RECIPES["angry"], 0.0)
    assert (zero["pitch"], zero["range"], zero["rate"], zero["gain"], zero["mix"]) == (0.0, 0.0, 1.0, 0.0, 0.0)
    with pytest.raises(InputError, match="intensity"):
        scale_recipe(DEMO_RECIPES["sad"], 1.5)

    kw = dict(n_per_emotion_per_speaker=2, speakers=1, emotions=("angry",), seed=2, recipes=DEMO_RECIPES)
    generate_corpus(tmp_path / "full", **kw)
    generate_corpus(tmp_path / "one", intensity=(1.0, 1.0), **kw)
    generate_corpus(tmp_path / "weak", intensity=(0.0, 0.0), **kw)
    generate_corpus(tmp_path / "graded", intensity=(0.2, 0.6), **kw)
    rows = {k: list(csv.DictReader(open(tmp_path / k / "manifest.csv"))) for k in ("full", "one", "weak", "graded")}
    assert "intensity" not in rows["full"][0]
    assert [r["intensity"] for r in rows["one"]] == ["1.0000", "1.0000"]
    levels = [float(r["intensity"]) for r in rows["graded"]]
    assert all(0.2 <= v <= 0.6 for v in levels) and levels[0] != levels[1]
    read = {k: sf.read(tmp_path / k / rows[k][0]["path"], dtype="float32")[0] for k in rows}
    assert np.array_equal(read["one"], read["full"])
    sr = 16000
    hi = {k: prosodic_features(read[k], sr, rows[k][0]["text"])[8] for k in ("full", "weak")}
    assert hi["full"] > hi["weak"] + 0.4  # the overdrive's high-band energy is gone at intensity 0 (0.63 measured)
    rms_db = {k: 20 * np.log10(np.sqrt(np.mean(read[k].astype(np.float64) ** 2))) for k in ("full", "weak")}
    assert rms_db["full"] - rms_db["weak"] == pytest.approx(5.0, abs=0.3)  # angry's +5 dB, same draws otherwise
    for bad in ((0.5, 0.2), (0.1, 1.2), 1.5):
        with pytest.raises(InputError, match="intensity"):
            generate_corpus(tmp_path / "bad", intensity=bad, **kw)
