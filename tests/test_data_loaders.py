"""Corpus loaders on tiny trees with the real layouts: exact clips, labels, speakers, and every drop counted."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from corpus_trees import (TONES, dominant_hz, make_crema_d, make_esd, make_hf, make_iemocap, make_manifest,
                          make_meld, make_msp_podcast, make_ravdess, make_tess, write_garbage, write_tone)
from esn_lens.data import DATASETS, EmotionDataset, Record, Skipped, load_dataset
from esn_lens.data.loaders import iemocap_speaker
from esn_lens.errors import InputError

BUILDERS = {"iemocap": make_iemocap, "meld": make_meld, "msp_podcast": make_msp_podcast, "ravdess": make_ravdess,
            "crema_d": make_crema_d, "esd": make_esd, "tess": make_tess, "manifest": make_manifest}


@pytest.fixture(scope="module")
def trees(tmp_path_factory) -> dict[str, Path]:
    """One read-only tree per corpus, built once for this module."""
    return {name: build(tmp_path_factory.mktemp(name)) for name, build in BUILDERS.items()}


def table(ds: EmotionDataset) -> dict[str, tuple[str, str]]:
    return {c.utterance_id: (c.emotion, c.speaker) for c in ds}


def assert_tones(ds: EmotionDataset) -> None:
    """Each clip's audio is the tone of its emotion (label and file were paired right)."""
    for clip in ds:
        audio, rate = clip.load(16000)
        assert rate == 16000 and audio.dtype == np.float32
        assert dominant_hz(audio, rate) == TONES[clip.emotion], clip


# --- each corpus -----------------------------------------------------------------------------------
def test_iemocap_default_iemocap4(trees):
    ds = load_dataset("iemocap", trees["iemocap"])
    assert ds.emotions == ("neutral", "happy", "sad", "angry")
    assert table(ds) == {
        "Ses01F_impro01_F000": ("neutral", "Ses01F"), "Ses01F_impro01_M000": ("angry", "Ses01M"),
        "Ses01F_impro01_F001": ("happy", "Ses01F"), "Ses01F_impro01_M001": ("sad", "Ses01M"),
        "Ses01F_impro01_F003": ("happy", "Ses01F"),
        "Ses02M_script01_1_F000": ("sad", "Ses02F"), "Ses02M_script01_1_M000": ("happy", "Ses02M"),
        "Ses02M_script01_1_F001": ("angry", "Ses02F"), "Ses02M_script01_1_M001": ("neutral", "Ses02M"),
    }
    assert [c.utterance_id for c in ds][:2] == ["Ses01F_impro01_F000", "Ses01F_impro01_M000"]  # file order
    m = ds.manifest
    assert (m.seen, m.kept, m.label_set) == (11, 9, "iemocap4 [neutral, happy, sad, angry]")
    assert m.dropped == {"excluded": ["Ses01F_impro01_F002", "Ses01F_impro01_M002"]}
    assert m.dropped_labels == {"excluded": {"fru": 1, "xxx": 1}}
    clip = ds[2]
    assert (clip.raw_label, clip.text, clip.corpus) == ("exc", "Yeah.", "iemocap")
    assert clip.path == trees["iemocap"] / "IEMOCAP_full_release/Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F001.wav"
    assert_tones(ds)


def test_iemocap_label_set_overrides_and_sessions(trees):
    five = load_dataset("iemocap", trees["iemocap"], label_set="iemocap5")
    assert five.counts() == {"neutral": 2, "happy": 3, "sad": 2, "angry": 2, "frustrated": 1}
    unmerged = load_dataset("iemocap", trees["iemocap"], label_map={"exc": "excited"})
    assert "Ses01F_impro01_F001" not in table(unmerged)
    assert unmerged.manifest.dropped_labels["excluded"] == {"exc": 1, "fru": 1, "xxx": 1}
    merged_all = load_dataset("iemocap", trees["iemocap"], label_set="all")
    assert merged_all.emotions == ("neutral", "happy", "sad", "angry", "frustrated")  # xxx is never an emotion
    s2 = load_dataset("iemocap", trees["iemocap"], sessions=(2,))
    assert s2.speakers() == ["Ses02F", "Ses02M"] and len(s2) == 4
    assert len(s2.manifest.dropped["filtered"]) == 7


def test_iemocap_speaker_is_the_speaking_actor():
    assert iemocap_speaker("Ses01F_impro01_F000") == "Ses01F"
    assert iemocap_speaker("Ses01F_impro01_M003") == "Ses01M"
    assert iemocap_speaker("Ses05M_script01_1b_F012") == "Ses05F"
    assert iemocap_speaker("garbage") == ""


def test_meld(trees):
    ds = load_dataset("meld", trees["meld"])
    assert ds.emotions == ("neutral", "happy", "sad", "angry", "surprised")
    assert table(ds) == {
        "train_dia0_utt0": ("neutral", "Chandler"), "train_dia0_utt1": ("neutral", "The Interviewer"),
        "train_dia0_utt2": ("happy", "Chandler"), "train_dia1_utt0": ("angry", "Monica"),
        "train_dia1_utt2": ("sad", "Monica"), "dev_dia0_utt0": ("surprised", "Phoebe"),
        "test_dia3_utt0": ("sad", "Rachel"),
    }
    assert ds.manifest.dropped_labels == {"excluded": {"fear": 1, "disgust": 1}}
    texts = {c.utterance_id: c.text for c in ds}
    assert texts["train_dia1_utt0"] == 'Why, "you" know, it\'s fine!'
    assert texts["test_dia3_utt0"] == "Caf\u00e9 time\u2019s over."  # cp1252 file decoded
    assert ds[5].path.parent.name == "dev_splits_complete"  # MELD.Raw's folder name found as fallback
    assert_tones(ds)
    dev = load_dataset("meld", trees["meld"], splits=["dev"], label_set="ekman7")
    assert table(dev) == {"dev_dia0_utt0": ("surprised", "Phoebe"), "dev_dia0_utt1": ("disgusted", "Ross")}


def test_meld_audio_dirs_parameter(trees):
    ds = load_dataset("meld", trees["meld"], splits=["dev"], audio_dirs={"dev": "dev_splits_complete"})
    assert len(ds) == 1
    with pytest.raises(InputError, match="no clips found") as err:
        load_dataset("meld", trees["meld"], splits=["train"], audio_dirs={"train": "elsewhere"})
    assert "missing_file 5" in str(err.value) and "excluded 1" in str(err.value)
    with pytest.raises(InputError, match="train_sent_emo.csv"):
        load_dataset("meld", trees["msp_podcast"])


def test_msp_podcast(trees):
    ds = load_dataset("msp_podcast", trees["msp_podcast"])
    assert ds.emotions == ("neutral", "happy", "sad", "angry", "surprised")
    assert table(ds) == {
        "MSP-PODCAST_0001_0008": ("neutral", "127"), "MSP-PODCAST_0001_0009": ("happy", "127"),
        "MSP-PODCAST_0002_0033": ("angry", "235"), "MSP-PODCAST_0002_0034": ("sad", "235"),
        "MSP-PODCAST_0003_0001": ("surprised", ""),  # SpkrID Unknown
    }
    assert ds.manifest.dropped_labels == {"excluded": {"C": 1, "X": 1}}
    assert_tones(ds)
    train = load_dataset("msp_podcast", trees["msp_podcast"], split_sets=["Train"])
    assert sorted(table(train)) == ["MSP-PODCAST_0001_0008", "MSP-PODCAST_0001_0009"]
    assert len(train.manifest.dropped["filtered"]) == 3


def test_ravdess(trees):
    ds = load_dataset("ravdess", trees["ravdess"])
    assert ds.emotions == ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgusted", "surprised")  # code order
    assert table(ds) == {
        "03-01-01-01-01-01-01": ("neutral", "Actor_01"), "03-01-02-01-02-02-01": ("calm", "Actor_01"),
        "03-01-05-02-01-01-01": ("angry", "Actor_01"), "03-01-03-01-02-01-02": ("happy", "Actor_02"),
        "03-01-04-01-01-02-02": ("sad", "Actor_02"),
    }
    assert ds.manifest.dropped == {"filtered": ["03-02-05-01-01-01-02"], "unparsed": ["Actor_02/notes.wav"]}
    assert ds[0].text == "Kids are talking by the door"
    assert_tones(ds)
    both = load_dataset("ravdess", trees["ravdess"], vocal_channel="both", label_set="basic4")
    assert both.counts() == {"neutral": 1, "happy": 1, "sad": 1, "angry": 2}
    assert both.manifest.dropped_labels == {"excluded": {"02": 1}}


def test_crema_d(trees):
    ds = load_dataset("crema_d", trees["crema_d"])
    assert ds.emotions == ("neutral", "happy", "sad", "angry", "fearful", "disgusted")
    assert table(ds) == {
        "1001_DFA_ANG_XX": ("angry", "1001"), "1001_IEO_HAP_HI": ("happy", "1001"),
        "1001_WSI_DIS_XX": ("disgusted", "1001"), "1002_ITS_SAD_LO": ("sad", "1002"),
        "1002_MTI_FEA_XX": ("fearful", "1002"), "1002_TIE_NEU_XX": ("neutral", "1002"),
    }
    assert ds[0].text == "Don't forget a jacket"
    assert ds.manifest.dropped == {}
    assert_tones(ds)
    assert len(load_dataset("crema_d", trees["crema_d"] / "AudioWAV")) == 6  # the AudioWAV folder itself


def test_esd_with_and_without_split_folders(trees):
    ds = load_dataset("esd", trees["esd"])
    assert ds.emotions == ("neutral", "happy", "sad", "angry", "surprised")
    assert table(ds) == {
        "0001_000701": ("happy", "0001"), "0001_001051": ("sad", "0001"),
        "0011_000351": ("angry", "0011"), "0011_000001": ("neutral", "0011"), "0011_001401": ("surprised", "0011"),
    }
    texts = {c.utterance_id: c.text for c in ds}
    assert texts["0011_000351"] == "The nine the eggs."
    assert texts["0001_000701"] == "\u6253\u5f00\u529f\u80fd\u3002"  # GB18030 transcript decoded
    assert_tones(ds)
    en = load_dataset("esd", trees["esd"], language="en")
    assert en.speakers() == ["0011"] and len(en.manifest.dropped["filtered"]) == 2
    test = load_dataset("esd", trees["esd"], partitions=["test"])
    assert list(table(test)) == ["0011_001401"]


def test_tess(trees):
    ds = load_dataset("tess", trees["tess"])
    assert ds.emotions == ("neutral", "happy", "sad", "angry", "fearful", "disgusted", "surprised")
    assert table(ds) == {
        "OAF_back_angry": ("angry", "OAF"), "OAF_bean_fear": ("fearful", "OAF"), "OAF_back_ps": ("surprised", "OAF"),
        "YAF_dog_sad": ("sad", "YAF"), "YAF_dog_neutral": ("neutral", "YAF"), "YAF_bath_ps": ("surprised", "YAF"),
        "YAF_bath_disgust": ("disgusted", "YAF"), "YAF_bath_happy": ("happy", "YAF"),
    }
    assert {c.raw_label for c in ds if c.emotion == "surprised"} == {"ps"}
    assert ds[0].text.startswith("Say the word ")
    assert_tones(ds)


def test_tess_nested_twice_reads_each_clip_once(tmp_path):
    make_tess(tmp_path / "TESS Toronto emotional speech set data")  # the Kaggle copy nests the folder again
    make_tess(tmp_path)
    ds = load_dataset("tess", tmp_path)
    assert len(ds) == 8 and len(ds.manifest.dropped["duplicate"]) == 8


def test_manifest_csv(trees):
    ds = load_dataset("manifest", trees["manifest"])
    assert ds.emotions == ("neutral", "happy", "sad", "angry")
    assert table(ds) == {
        "spk1_angry_000": ("angry", "spk1"), "spk1_sad_000": ("sad", "spk1"), "spk2_happy_000": ("happy", "spk2"),
        "spk2_neutral_000": ("neutral", "spk2"), "spk3_angry_000": ("angry", "spk3"),
        "wav/spk3/spk3_neutral_000": ("neutral", "spk3"),  # utterance_id left empty: the path without suffix
    }
    assert ds[0].text == "I am so angry" and ds[4].raw_label == "anger"
    assert_tones(ds)
    same = load_dataset("manifest", trees["manifest"] / "manifest.csv")  # the CSV itself as root
    assert table(same) == table(ds)


def test_manifest_keeps_custom_labels_and_counts_bad_rows(tmp_path):
    make_manifest(tmp_path, rows=[("a.wav", "bored", "s1", "a", ""), ("b.wav", "angry", "s2", "b", "")])
    with open(tmp_path / "manifest.csv", "a") as f:
        f.write(",angry,s3,c,\n")
    ds = load_dataset("manifest", tmp_path)
    assert ds.emotions == ("angry", "bored") and ds.manifest.dropped == {"unparsed": ["manifest.csv line 4"]}
    with pytest.raises(InputError, match="missing column"):
        (tmp_path / "bad").mkdir()
        (tmp_path / "bad" / "manifest.csv").write_text("file,label\na.wav,angry\n")
        load_dataset("manifest", tmp_path / "bad")


def test_hf_dataset_like_object():
    data = make_hf()
    ds = load_dataset("hf", data)
    assert data.audio_reads == 0  # labels read from columns: no audio decoded at load
    assert ds.emotions == ("neutral", "happy", "sad", "angry")
    assert table(ds)["angry_1.wav"] == ("angry", "s1") and len(ds) == 8
    assert ds.speakers() == ["s0", "s1"] and ds[0].text == "neutral 0" and ds[0].corpus == "hf"
    assert_tones(ds)
    assert data.audio_reads == 8
    rows = [dict(data[i]) for i in range(len(data))]  # a plain list of dicts works too
    for r in rows:
        r["emotion"] = ["neutral", "happy", "sad", "angry"][r["emotion"]]
    plain = load_dataset("hf", rows, label_column="emotion", speaker_column="speaker_id", label_set="basic4")
    assert [c.emotion for c in plain] == [c.emotion for c in ds] and plain[0].utterance_id == "neutral_0.wav"
    with pytest.raises(InputError, match="label column 'mood'"):
        load_dataset("hf", data, label_column="mood")
    with pytest.raises(InputError, match="in-memory dataset object"):
        load_dataset("hf", "/some/path")


def test_hf_check_audio_counts_undecodable_rows():
    data = make_hf(1)
    data._rows[2]["audio"] = None
    ds = load_dataset("hf", data, check_audio=True)
    assert len(ds) == 3 and ds.manifest.dropped == {"unreadable": ["sad_0.wav"]}


# --- failures: corrupt, missing, unknown label, empty, no root ---------------------------------------
def test_corrupt_audio_dropped_with_check_audio_or_raises_at_load(tmp_path):
    make_crema_d(tmp_path)
    write_garbage(tmp_path / "AudioWAV" / "1003_TSI_ANG_XX.wav")
    checked = load_dataset("crema_d", tmp_path, check_audio=True)
    assert len(checked) == 6 and checked.manifest.dropped == {"unreadable": ["1003_TSI_ANG_XX"]}
    assert "unreadable 1: 1003_TSI_ANG_XX" in checked.manifest.summary()
    lazy = load_dataset("crema_d", tmp_path)
    assert len(lazy) == 7
    bad = next(i for i, c in enumerate(lazy) if c.utterance_id == "1003_TSI_ANG_XX")
    with pytest.raises(InputError, match="1003_TSI_ANG_XX"):
        lazy[bad].load(16000)
    with pytest.raises(InputError, match="1003_TSI_ANG_XX"):
        lazy.load_audio(bad, 16000)
    assert list(lazy.manifest.load_failures) == ["1003_TSI_ANG_XX"]
    assert len(list(lazy.iter_audio(16000, skip_unreadable=True))) == 6
    assert "failed to read after loading: 1003_TSI_ANG_XX" in lazy.manifest.summary()


def test_missing_audio_file_is_counted(tmp_path):
    make_iemocap(tmp_path, missing=("Ses01F_impro01_M001",))
    ds = load_dataset("iemocap", tmp_path)
    assert "Ses01F_impro01_M001" not in table(ds) and len(ds) == 8
    assert ds.manifest.dropped["missing_file"] == ["Ses01F_impro01_M001"]
    assert "missing_file 1: Ses01F_impro01_M001" in ds.manifest.summary()


def test_unknown_label_raises_naming_label_file_and_set_or_is_counted(tmp_path):
    make_iemocap(tmp_path, extra_label=("Ses01F_impro01_F004", "zzz"))
    with pytest.raises(InputError) as err:
        load_dataset("iemocap", tmp_path)
    msg = str(err.value)
    assert "'zzz'" in msg and "Ses01F_impro01_F004" in msg and "Ses01F_impro01.txt" in msg and "iemocap4" in msg
    ds = load_dataset("iemocap", tmp_path, drop_unmapped=True)
    assert ds.manifest.dropped["unmapped"] == ["Ses01F_impro01_F004"]
    assert ds.manifest.dropped_labels["unmapped"] == {"zzz": 1} and len(ds) == 9
    fixed = load_dataset("iemocap", tmp_path, label_map={"zzz": "angry"})
    assert table(fixed)["Ses01F_impro01_F004"] == ("angry", "Ses01F")


def test_unknown_label_in_generic_manifest_with_a_label_set(tmp_path):
    make_manifest(tmp_path, rows=[("a.wav", "bored", "s1", "a", ""), ("b.wav", "anger", "s2", "b", "")])
    with pytest.raises(InputError, match=r"'bored'.*manifest.csv line 2.*basic4"):
        load_dataset("manifest", tmp_path, label_set="basic4")
    ds = load_dataset("manifest", tmp_path, label_set="basic4", drop_unmapped=True)
    assert table(ds) == {"b": ("angry", "s2")} and ds.emotions == ("neutral", "happy", "sad", "angry")


def test_empty_corpus_and_missing_root(tmp_path):
    (tmp_path / "empty").mkdir()
    for name in ("iemocap", "ravdess", "crema_d", "esd", "tess"):
        with pytest.raises(InputError, match=f"{name}: no clips found in .*empty.*expected"):
            load_dataset(name, tmp_path / "empty")
    with pytest.raises(InputError, match="labels_consensus.csv"):
        load_dataset("msp_podcast", tmp_path / "empty")
    make_ravdess(tmp_path / "only_calm")
    with pytest.raises(InputError, match="no clips found") as err:  # everything excluded by the label set
        load_dataset("ravdess", tmp_path / "only_calm", label_set=["fearful"])
    assert "excluded 5" in str(err.value)
    with pytest.raises(FileNotFoundError, match="does_not_exist.*expected"):
        load_dataset("iemocap", tmp_path / "does_not_exist")


def test_resampling_on_load(tmp_path):
    write_tone(tmp_path / "wav" / "hi.wav", "angry", rate=44100)
    (tmp_path / "manifest.csv").write_text("path,emotion,speaker\nwav/hi.wav,angry,s1\n")
    ds = load_dataset("manifest", tmp_path)
    native, rate = ds[0].load()
    assert (native.size, rate) == (8820, 44100)
    audio, rate = ds[0].load(16000)
    assert (audio.size, rate) == (3200, 16000) and dominant_hz(audio, 16000) == TONES["angry"]
    assert sf.info(str(ds[0].path)).samplerate == 44100  # the file itself is untouched


# --- the registry ------------------------------------------------------------------------------------
def test_user_loader_registers_like_the_builtins(tmp_path):
    write_tone(tmp_path / "alice" / "mad" / "x1.wav", "angry")
    write_tone(tmp_path / "bob" / "glad" / "x2.wav", "happy")
    (tmp_path / "bob" / "glad" / "x3.txt").write_text("not audio")

    @DATASETS.register("test_user_corpus", overwrite=True)
    def user_corpus(root, *, only=None):
        for wav in sorted(root.glob("*/*/*")):
            if wav.suffix != ".wav":
                yield Skipped(wav.name)
            elif only is None or wav.parts[-3] == only:
                yield Record(wav.stem, wav.parent.name, path=wav, speaker=wav.parts[-3])

    ds = load_dataset("test_user_corpus", tmp_path, label_map={"mad": "angry", "glad": "happy"})
    assert table(ds) == {"x1": ("angry", "alice"), "x2": ("happy", "bob")}
    assert ds.manifest.dropped == {"unparsed": ["x3.txt"]}
    assert_tones(ds)
    with pytest.raises(InputError, match="unknown option.*'onyl'.*accepts: only"):
        load_dataset("test_user_corpus", tmp_path, onyl="bob")
    with pytest.raises(KeyError, match="unknown dataset 'nope'.*iemocap"):
        load_dataset("nope", tmp_path)
    assert {"iemocap", "meld", "msp_podcast", "ravdess", "crema_d", "esd", "tess", "manifest", "hf"} <= set(DATASETS)
