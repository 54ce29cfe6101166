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
    assert (m.seen, m.kept, m.label_set) == (11, 9, "iemocap4")
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
    ds = load_dataset("meld", trees["meld"], splits=["train"], audio_dirs={"train": "elsewhere"})
    with pytest.raises(InputError, match="no clips found"):
        raise AssertionError(ds)  # pragma: no cover
