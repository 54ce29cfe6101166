"""EmotionDataset operations, the manifest, label sets and speaker-disjoint splits."""
from __future__ import annotations

import numpy as np
import pytest

from corpus_trees import make_iemocap, make_msp_podcast
from esn_lens.data import (LABEL_SETS, EmotionClip, EmotionDataset, LabelMapper, LabelSet, Manifest, get_label_set,
                           load_dataset, order_emotions, speaker_disjoint_split, split_identification_evaluation)
from esn_lens.errors import InputError

EMOTIONS = ("neutral", "happy", "sad", "angry")


def synthetic(n_speakers: int = 6, per: dict[str, int] | None = None) -> EmotionDataset:
    """In-memory clips: ``per[emotion]`` clips for each of ``n_speakers`` speakers."""
    per = per or {"neutral": 5, "happy": 4, "sad": 3, "angry": 2}
    clips = [EmotionClip(f"s{s}_{e}_{k}", e, audio=np.zeros(160, np.float32), sampling_rate=16000, speaker=f"s{s}")
             for s in range(n_speakers) for e, n in per.items() for k in range(n)]
    return EmotionDataset(clips, EMOTIONS, manifest=Manifest(corpus="synthetic", seen=len(clips), kept=len(clips)))


# --- the dataset --------------------------------------------------------------------------------------
def test_sequence_counts_speakers_and_batches():
    ds = synthetic(3)
    assert len(ds) == 42 and ds[0].utterance_id == "s0_neutral_0" and ds[np.int64(1)].utterance_id == "s0_neutral_1"
    assert ds.counts() == {"neutral": 15, "happy": 12, "sad": 9, "angry": 6}
    assert ds.speakers() == ["s0", "s1", "s2"]
    assert ds.emotion_ids()[:6] == [0, 0, 0, 0, 0, 1]
    sizes = [len(b) for b in ds.batches(10)]
    assert sizes == [10, 10, 10, 10, 2] and [len(b) for b in ds.batches(10, drop_last=True)] == [10] * 4
    assert [c for b in ds.batches(10) for c in b] == list(ds)
    assert isinstance(ds[:5], EmotionDataset) and len(ds[:5]) == 5 and ds[:5].emotions == EMOTIONS
    assert "42 clips, 3 speakers" in repr(ds)
    with pytest.raises(InputError, match="batch_size"):
        next(ds.batches(0))


def test_filter_by_emotion_subset_keep_order_and_manifest():
    ds = synthetic(3)
    f = ds.filter(lambda c: c.speaker == "s1", name="s1 only")
    assert f.speakers() == ["s1"] and f.emotions == EMOTIONS and len(f) == 14
    assert f.manifest.history == ["filter(s1 only): 42 -> 14"] and ds.manifest.history == []
    groups = ds.by_emotion()
    assert list(groups) == list(EMOTIONS) and {e: len(g) for e, g in groups.items()} == ds.counts()
    two = ds.subset(emotions=["angry", "sad"])
    assert two.emotions == ("angry", "sad") and two.counts() == {"angry": 6, "sad": 9}
    picked = ds.subset([5, 0, 7])
    assert [c.utterance_id for c in picked] == [ds[5].utterance_id, ds[0].utterance_id, ds[7].utterance_id]
    assert len(ds.subset(speakers=["s0", "s2"])) == 28
    with pytest.raises(InputError, match="speakers.*'s9'"):
        ds.subset(speakers=["s9"])
    with pytest.raises(InputError, match="emotions.*'bored'"):
        ds.subset(emotions=["bored"])
    empty = ds.filter(lambda c: c.emotion == "angry").by_emotion()["happy"]
    assert len(empty) == 0 and empty.counts()["happy"] == 0


def test_cap_per_emotion_is_seeded_and_keeps_order():
    ds = synthetic(4)
    capped = ds.cap_per_emotion(5, seed=3)
    assert capped.counts() == {"neutral": 5, "happy": 5, "sad": 5, "angry": 5}
    assert [c.utterance_id for c in capped] == [c.utterance_id for c in ds.cap_per_emotion(5, seed=3)]
    assert [c.utterance_id for c in capped] != [c.utterance_id for c in ds.cap_per_emotion(5, seed=4)]
    order = {c.utterance_id: i for i, c in enumerate(ds)}
    assert [order[c.utterance_id] for c in capped] == sorted(order[c.utterance_id] for c in capped)
    assert "fewer than 13: sad, angry" in ds.cap_per_emotion(13).manifest.history[-1]
    shuffled = ds.shuffle(seed=1)
    assert sorted(c.utterance_id for c in shuffled) == sorted(c.utterance_id for c in ds) and list(shuffled) != list(ds)


def test_dataset_rejects_clips_outside_its_emotions():
    clip = EmotionClip("c1", "bored", audio=np.zeros(10, np.float32), sampling_rate=16000)
    with pytest.raises(InputError, match="c1.*'bored'"):
        EmotionDataset([clip], EMOTIONS)
    assert EmotionDataset([clip]).emotions == ("bored",)


def test_manifest_summary_and_dict_survive_derivation(tmp_path):
    make_iemocap(tmp_path, missing=("Ses02M_script01_1_F000",))
    ds = load_dataset("iemocap", tmp_path)
    line = ds.manifest.summary()
    assert line.startswith(f"iemocap at {tmp_path}") and "11 seen, 8 kept, 3 dropped" in line
    assert "excluded 2: fru 1, xxx 1" in line and "missing_file 1: Ses02M_script01_1_F000" in line
    derived = ds.filter(lambda c: c.speaker == "Ses01F").cap_per_emotion(1, seed=0)
    assert derived.manifest.dropped == ds.manifest.dropped and derived.manifest.seen == 11
    assert len(derived.manifest.history) == 2 and "then filter: 8 -> 3 -> cap_per_emotion" in derived.manifest.summary()
    d = derived.manifest.to_dict()
    assert d["dropped"]["missing_file"] == ["Ses02M_script01_1_F000"] and d["label_set"].startswith("iemocap4 [")


# --- label sets -----------------------------------------------------------------------------------------
def test_label_sets_and_ordering():
    assert get_label_set("iemocap4").emotions == EMOTIONS
    assert get_label_set("meld5").emotions == ("neutral", "happy", "sad", "angry", "surprised")
    assert get_label_set("all") is None
    assert get_label_set(["angry", "calm"]) == LabelSet("custom", ("angry", "calm"), "user-given list")
    with pytest.raises(InputError, match="unknown label set 'iemocap9'.*iemocap4"):
        get_label_set("iemocap9")
    with pytest.raises(InputError, match="distinct"):
        LabelSet("x", ("sad", "sad"))
    assert order_emotions({"sad", "bored", "neutral", "angry"}) == ("neutral", "sad", "angry", "bored")
    assert {"iemocap4", "iemocap5", "meld5", "msp5", "basic4", "ekman7"} <= set(LABEL_SETS)


def test_label_mapper_rules():
    m = LabelMapper("iemocap")
    assert m("exc", "u", "f") == ("happy", None) and m("NEU", "u", "f") == ("neutral", None)
    assert m("fru", "u", "f") == (None, "excluded") and m("xxx", "u", "f") == (None, "excluded")
    with pytest.raises(InputError, match="'happy'.*u1 in f.txt.*iemocap4"):
        m("happy", "u1", "f.txt")  # strict per corpus: IEMOCAP writes 'hap'
    over = LabelMapper("iemocap", label_map={"exc": None, "FRU": "angry"}, label_set="iemocap5")
    assert over("exc", "u", "") == (None, "excluded") and over("fru", "u", "") == ("angry", None)
    generic = LabelMapper("manifest")
    assert generic("Anger", "u", "") == ("angry", None) and generic("bored", "u", "") == ("bored", None)
    with pytest.raises(InputError, match="label_map"):
        LabelMapper("x", label_map={"a": ""})
    with pytest.raises(InputError, match="maps '03' to 'joy'.*neither in label set custom"):
        LabelMapper("ravdess", label_set=["happy"], label_map={"03": "joy"})


# --- splits ---------------------------------------------------------------------------------------------
def test_speaker_disjoint_split_by_fraction_is_disjoint_and_deterministic():
    ds = synthetic(8)
    ident, evaluation = speaker_disjoint_split(ds, eval_fraction=0.5, seed=0)
    assert not set(ident.speakers()) & set(evaluation.speakers())
    assert len(ident) + len(evaluation) == len(ds) and len(evaluation) == len(ds) // 2
    again = speaker_disjoint_split(ds, eval_fraction=0.5, seed=0)
    assert again.evaluation.speakers() == evaluation.speakers()
    other = {tuple(speaker_disjoint_split(ds, seed=s).evaluation.speakers()) for s in range(6)}
    assert len(other) > 1  # the seed matters
    quarter = speaker_disjoint_split(ds, eval_fraction=0.25, seed=1)
    assert len(quarter.evaluation.speakers()) == 2
    assert "speaker_disjoint_split(eval_fraction=0.5, seed=0) evaluation" in evaluation.manifest.history[-1]


def test_speaker_disjoint_split_by_named_speakers_and_errors():
    ds = synthetic(4)
    ident, evaluation = speaker_disjoint_split(ds, eval_speakers=["s3"])
    assert evaluation.speakers() == ["s3"] and ident.speakers() == ["s0", "s1", "s2"]
    with pytest.raises(InputError, match="'s9'"):
        speaker_disjoint_split(ds, eval_speakers=["s9"])
    with pytest.raises(InputError, match="each side"):
        speaker_disjoint_split(ds, eval_speakers=["s0", "s1", "s2", "s3"])
    with pytest.raises(InputError, match="at least 2 speakers"):
        speaker_disjoint_split(synthetic(1))
    with pytest.raises(InputError, match="eval_fraction"):
        speaker_disjoint_split(ds, eval_fraction=1.0)


def test_split_identification_evaluation_caps_and_is_seeded():
    ds = synthetic(10, {"neutral": 30, "happy": 25, "sad": 8, "angry": 40})
    ident, evaluation = split_identification_evaluation(ds, eval_per_emotion=50, seed=7)
    assert not set(ident.speakers()) & set(evaluation.speakers())
    assert evaluation.counts() == {"neutral": 50, "happy": 50, "sad": 40, "angry": 50}  # sad: only 8 x 5 speakers
    assert ident.counts() == {"neutral": 150, "happy": 125, "sad": 40, "angry": 200}  # not capped by default
    again = split_identification_evaluation(ds, eval_per_emotion=50, seed=7)
    assert [c.utterance_id for c in again.evaluation] == [c.utterance_id for c in evaluation]
    assert [c.utterance_id for c in again.identification] == [c.utterance_id for c in ident]
    capped = split_identification_evaluation(ds, identification_per_emotion=10, seed=7)
    assert set(capped.identification.counts().values()) == {10}
    assert capped.evaluation.counts() == {"neutral": 150, "happy": 125, "sad": 40, "angry": 200}  # 200 default cap


def test_split_on_a_loaded_corpus_with_unknown_speakers(tmp_path):
    ds = load_dataset("msp_podcast", make_msp_podcast(tmp_path))
    with pytest.raises(InputError, match="1 clip.*no speaker.*MSP-PODCAST_0003_0001.*unknown_speakers='drop'"):
        speaker_disjoint_split(ds)
    with pytest.warns(UserWarning, match="no (identification|evaluation) clips"):
        ident, evaluation = speaker_disjoint_split(ds, unknown_speakers="drop", eval_speakers=["235"])
    assert ident.speakers() == ["127"] and evaluation.speakers() == ["235"]
    assert "without speaker" in ident.manifest.summary()


def test_iemocap_session_split(tmp_path):
    ds = load_dataset("iemocap", make_iemocap(tmp_path))
    ident, evaluation = split_identification_evaluation(ds, eval_speakers=["Ses02F", "Ses02M"], seed=0)
    assert ident.speakers() == ["Ses01F", "Ses01M"] and evaluation.speakers() == ["Ses02F", "Ses02M"]
    assert evaluation.counts() == {"neutral": 1, "happy": 1, "sad": 1, "angry": 1}
