"""Tiny corpus trees with the real file/folder names and label-file formats of each corpus.

Each clip is a 0.2 s sine at 16 kHz whose frequency encodes its emotion (:data:`TONES`), so a test can
check that a loaded clip's audio is the one its label belongs to (:func:`dominant_hz`).
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import soundfile as sf

from esn_lens.data.labels import ALIASES

RATE = 16000
SECONDS = 0.2
#: Tone (Hz) of each canonical emotion; 0.2 s gives 5 Hz FFT bins, so these are exact bins.
TONES = {"neutral": 200, "happy": 300, "sad": 400, "angry": 500, "fearful": 600, "disgusted": 700,
         "surprised": 800, "calm": 900, "frustrated": 1000, "contemptuous": 1100, "other": 1200}


def write_tone(path: Path, emotion: str, rate: int = RATE, seconds: float = SECONDS) -> Path:
    """Write a mono 16-bit sine for ``emotion`` at ``path`` (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(round(rate * seconds))) / rate
    sf.write(str(path), 0.5 * np.sin(2 * np.pi * TONES[emotion] * t), rate, subtype="PCM_16")
    return path


def dominant_hz(audio: np.ndarray, rate: int) -> float:
    """Frequency of the strongest FFT bin."""
    spectrum = np.abs(np.fft.rfft(audio))
    return float(np.fft.rfftfreq(audio.size, 1 / rate)[int(np.argmax(spectrum))])


def write_garbage(path: Path) -> Path:
    """A ``.wav`` that is not audio."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not a RIFF file" * 10)
    return path


def _write_csv(path: Path, header: list[str], rows: list[list[object]], encoding: str = "utf-8") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding=encoding) as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


# ---------------------------------------------------------------------------------------------------
# IEMOCAP: IEMOCAP_full_release/Session{n}/dialog/EmoEvaluation/<dialog>.txt + sentences/wav/<dialog>/<utt>.wav
IEMOCAP_TURNS = {  # dialog -> [(utterance, raw label, canonical emotion for the tone or None, transcript)]
    "Ses01F_impro01": [
        ("Ses01F_impro01_F000", "neu", "neutral", "Excuse me."),
        ("Ses01F_impro01_M000", "ang", "angry", "Do you have your forms?"),
        ("Ses01F_impro01_F001", "exc", "happy", "Yeah."),
        ("Ses01F_impro01_M001", "sad", "sad", "Let me see them."),
        ("Ses01F_impro01_F002", "fru", "frustrated", "Is there a problem?"),
        ("Ses01F_impro01_M002", "xxx", "other", "Who told you to get in this line?"),
        ("Ses01F_impro01_F003", "hap", "happy", "You did."),
    ],
    "Ses02M_script01_1": [
        ("Ses02M_script01_1_F000", "sad", "sad", "What's he going to say?"),
        ("Ses02M_script01_1_M000", "hap", "happy", "Maybe we can talk."),
        ("Ses02M_script01_1_F001", "ang", "angry", "No."),
        ("Ses02M_script01_1_M001", "neu", "neutral", "Okay."),
    ],
}


def make_iemocap(base: Path, *, missing: tuple[str, ...] = (), extra_label: tuple[str, str] | None = None) -> Path:
    """``base/IEMOCAP_full_release`` with two sessions; returns ``base`` (the loader finds the release).

    ``missing``: utterances whose wav is not written. ``extra_label``: ``(utt, label)`` appended to
    Ses01F_impro01 (with audio), e.g. an unknown label.
    """
    release = base / "IEMOCAP_full_release"
    for dialog, turns in IEMOCAP_TURNS.items():
        session = release / f"Session{int(dialog[3:5])}"
        turns = list(turns) + ([(extra_label[0], extra_label[1], "other", "")] if extra_label and dialog == "Ses01F_impro01" else [])
        lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
        script = []
        for k, (utt, label, emotion, text) in enumerate(turns):
            start, end = 6.2901 + 3 * k, 8.2357 + 3 * k
            lines += [f"[{start:.4f} - {end:.4f}]\t{utt}\t{label}\t[2.5000, 2.5000, 2.5000]",
                      "C-E2:\tNeutral;\t()", "C-E3:\tNeutral;\t()", "A-E3:\tval 3; act 2; dom  2;\t()", ""]
            script.append(f"{utt} [{start:08.4f}-{end:08.4f}]: {text}")
            if utt not in missing:
                write_tone(session / "sentences" / "wav" / dialog / f"{utt}.wav", emotion)
        eval_dir = session / "dialog" / "EmoEvaluation"
        eval_dir.mkdir(parents=True, exist_ok=True)
        (eval_dir / f"{dialog}.txt").write_text("\n".join(lines) + "\n")
        (eval_dir / f"._{dialog}.txt").write_bytes(b"\x00\x05\x16\x07 mac resource fork")
        (eval_dir / "Categorical").mkdir(exist_ok=True)
        (eval_dir / "Categorical" / f"{dialog}_e1_cat.txt").write_text(f"{turns[0][0]} :Neutral state; ()\n")
        trans = session / "dialog" / "transcriptions" / f"{dialog}.txt"
        trans.parent.mkdir(parents=True, exist_ok=True)
        trans.write_text("\n".join(script) + "\n")
    return base


# ---------------------------------------------------------------------------------------------------
# MELD: MELD.Raw/{train,dev,test}_sent_emo.csv + extracted audio train/, dev_splits_complete/ (the video
# folder name, to exercise the fallback), test/
MELD_HEADER = ["Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID",
               "Season", "Episode", "StartTime", "EndTime"]
MELD_ROWS = {  # split -> [(dialogue, utterance, speaker, emotion raw, canonical, text)]
    "train": [(0, 0, "Chandler", "neutral", "neutral", "also I was the point person on my company's transition"),
              (0, 1, "The Interviewer", "neutral", "neutral", "You must've had your hands full."),
              (0, 2, "Chandler", "joy", "happy", "That I did. That I did."),
              (1, 0, "Monica", "anger", "angry", "Why, \"you\" know, it's fine!"),
              (1, 1, "Joey", "fear", "fearful", "Oh no."),
              (1, 2, "Monica", "sadness", "sad", "I'm sorry.")],
    "dev": [(0, 0, "Phoebe", "surprise", "surprised", "Oh my God!"),
            (0, 1, "Ross", "disgust", "disgusted", "Ew.")],
    "test": [(3, 0, "Rachel", "sadness", "sad", "Caf\u00e9 time\u2019s over.")],
}
MELD_AUDIO_DIRS = {"train": "train", "dev": "dev_splits_complete", "test": "test"}


def make_meld(base: Path) -> Path:
    """``base/MELD.Raw`` with three splits (the test CSV in cp1252, as some copies are); returns ``base``."""
    raw = base / "MELD.Raw"
    for split, rows in MELD_ROWS.items():
        table = []
        for i, (dia, utt, speaker, label, emotion, text) in enumerate(rows, 1):
            sentiment = {"neutral": "neutral", "happy": "positive", "surprised": "positive"}.get(emotion, "negative")
            table.append([i, text, speaker, label, sentiment, dia, utt, 8, 21, "00:16:16,059", "00:16:21,731"])
            write_tone(raw / MELD_AUDIO_DIRS[split] / f"dia{dia}_utt{utt}.wav", emotion)
        _write_csv(raw / f"{split}_sent_emo.csv", MELD_HEADER, table, encoding="cp1252" if split == "test" else "utf-8")
    return base


# ---------------------------------------------------------------------------------------------------
# MSP-Podcast: Labels/labels_consensus.csv + Audios/<FileName>
MSP_HEADER = ["FileName", "EmoClass", "EmoAct", "EmoVal", "EmoDom", "SpkrID", "Gender", "Split_Set"]
MSP_ROWS = [  # (file, class, canonical for the tone, speaker, split)
    ("MSP-PODCAST_0001_0008.wav", "N", "neutral", "127", "Train"),
    ("MSP-PODCAST_0001_0009.wav", "H", "happy", "127", "Train"),
    ("MSP-PODCAST_0002_0033.wav", "A", "angry", "235", "Development"),
    ("MSP-PODCAST_0002_0034.wav", "S", "sad", "235", "Test1"),
    ("MSP-PODCAST_0003_0001.wav", "U", "surprised", "Unknown", "Test1"),
    ("MSP-PODCAST_0003_0002.wav", "C", "contemptuous", "311", "Train"),
    ("MSP-PODCAST_0003_0003.wav", "X", "other", "311", "Train"),
]


def make_msp_podcast(base: Path) -> Path:
    """``base`` holding ``Labels/labels_consensus.csv`` and ``Audios/``; returns ``base``."""
    rows = []
    for name, cls, emotion, speaker, split in MSP_ROWS:
        rows.append([name, cls, 4.2, 3.8, 4.0, speaker, "Female" if speaker != "235" else "Male", split])
        write_tone(base / "Audios" / name, emotion)
    _write_csv(base / "Labels" / "labels_consensus.csv", MSP_HEADER, rows)
    return base


# ---------------------------------------------------------------------------------------------------
# RAVDESS: Actor_XX/03-01-EE-II-SS-RR-AA.wav
RAVDESS_FILES = {  # relative path -> canonical emotion (None: not a clip of the speech set)
    "Actor_01/03-01-01-01-01-01-01.wav": "neutral",
    "Actor_01/03-01-05-02-01-01-01.wav": "angry",
    "Actor_01/03-01-02-01-02-02-01.wav": "calm",
    "Actor_02/03-01-03-01-02-01-02.wav": "happy",
    "Actor_02/03-01-04-01-01-02-02.wav": "sad",
    "Actor_02/03-02-05-01-01-01-02.wav": "angry",  # song: filtered by default
    "Actor_02/notes.wav": "other",  # not a RAVDESS name: unparsed
}


def make_ravdess(base: Path) -> Path:
    """``base/Audio_Speech_Actors_01-24/Actor_XX/...``; returns ``base``."""
    for rel, emotion in RAVDESS_FILES.items():
        write_tone(base / "Audio_Speech_Actors_01-24" / rel, emotion)
    return base


# ---------------------------------------------------------------------------------------------------
# CREMA-D: AudioWAV/<actor>_<sentence>_<emotion>_<level>.wav
CREMA_FILES = {"1001_DFA_ANG_XX": "angry", "1001_IEO_HAP_HI": "happy", "1001_WSI_DIS_XX": "disgusted",
               "1002_TIE_NEU_XX": "neutral", "1002_ITS_SAD_LO": "sad", "1002_MTI_FEA_XX": "fearful"}


def make_crema_d(base: Path) -> Path:
    """``base/AudioWAV/...`` (plus the repository's other folders); returns ``base``."""
    for stem, emotion in CREMA_FILES.items():
        write_tone(base / "AudioWAV" / f"{stem}.wav", emotion)
    (base / "processedResults").mkdir(parents=True, exist_ok=True)
    (base / "processedResults" / "summaryTable.csv").write_text("FileName,VoiceVote\n")
    return base


# ---------------------------------------------------------------------------------------------------
# ESD: <speaker>/<Emotion>/[train|test|evaluation/]<speaker>_<utt>.wav + <speaker>/<speaker>.txt
ESD_FILES = {  # relative path -> canonical emotion
    "0011/Angry/train/0011_000351.wav": "angry",
    "0011/Neutral/evaluation/0011_000001.wav": "neutral",
    "0011/Surprise/test/0011_001401.wav": "surprised",
    "0001/Happy/0001_000701.wav": "happy",  # a release without split subfolders
    "0001/Sad/0001_001051.wav": "sad",
}
ESD_TRANSCRIPTS = {
    "0011": [("0011_000001", "The nine the eggs.", "Neutral"), ("0011_000351", "The nine the eggs.", "Angry"),
             ("0011_001401", "I am going.", "Surprise")],
    "0001": [("0001_000701", "\u6253\u5f00\u529f\u80fd\u3002", "\u5feb\u4e50"),
             ("0001_001051", "\u6253\u5f00\u529f\u80fd\u3002", "\u4f24\u5fc3")],
}


def make_esd(base: Path) -> Path:
    """``base/Emotion Speech Dataset/<speaker>/...`` (Chinese transcripts in GB18030); returns ``base``."""
    root = base / "Emotion Speech Dataset"
    for rel, emotion in ESD_FILES.items():
        write_tone(root / rel, emotion)
    for speaker, lines in ESD_TRANSCRIPTS.items():
        text = "\n".join("\t".join(line) for line in lines) + "\n"
        (root / speaker / f"{speaker}.txt").write_bytes(text.encode("gb18030" if speaker == "0001" else "utf-8"))
    return base


# ---------------------------------------------------------------------------------------------------
# TESS: <OAF|YAF>_<emotion>/<OAF|YAF>_<word>_<emotion>.wav
TESS_FILES = {
    "OAF_angry/OAF_back_angry.wav": "angry",
    "OAF_Fear/OAF_bean_fear.wav": "fearful",
    "OAF_Pleasant_surprise/OAF_back_ps.wav": "surprised",
    "YAF_sad/YAF_dog_sad.wav": "sad",
    "YAF_neutral/YAF_dog_neutral.wav": "neutral",
    "YAF_pleasant_surprised/YAF_bath_ps.wav": "surprised",
    "YAF_disgust/YAF_bath_disgust.wav": "disgusted",
    "YAF_happy/YAF_bath_happy.wav": "happy",
}


def make_tess(base: Path) -> Path:
    """``base/TESS Toronto emotional speech set data/...``; returns ``base``."""
    for rel, emotion in TESS_FILES.items():
        write_tone(base / "TESS Toronto emotional speech set data" / rel, emotion)
    return base


# ---------------------------------------------------------------------------------------------------
# Generic manifest: root/manifest.csv with path,emotion,speaker,utterance_id,text
MANIFEST_ROWS = [  # (path, emotion label, speaker, utterance_id, text)
    ("wav/spk1/spk1_angry_000.wav", "angry", "spk1", "spk1_angry_000", "I am so angry"),
    ("wav/spk1/spk1_sad_000.wav", "sad", "spk1", "spk1_sad_000", "I feel sad"),
    ("wav/spk2/spk2_happy_000.wav", "happy", "spk2", "spk2_happy_000", "What a day"),
    ("wav/spk2/spk2_neutral_000.wav", "neutral", "spk2", "spk2_neutral_000", ""),
    ("wav/spk3/spk3_angry_000.wav", "anger", "spk3", "spk3_angry_000", "Stop it"),
    ("wav/spk3/spk3_neutral_000.wav", "neutral", "spk3", "", "Fine"),
]


def make_manifest(base: Path, rows: list[tuple[str, str, str, str, str]] | None = None) -> Path:
    """``base/manifest.csv`` and its wavs; returns ``base``."""
    rows = MANIFEST_ROWS if rows is None else rows
    for path, label, *_ in rows:
        write_tone(base / path, ALIASES.get(label, "other"))
    _write_csv(base / "manifest.csv", ["path", "emotion", "speaker", "utterance_id", "text"], [list(r) for r in rows])
    return base


# ---------------------------------------------------------------------------------------------------
class ClassLabel:
    """The part of ``datasets.ClassLabel`` the hf loader uses."""

    def __init__(self, names: list[str]):
        self.names = names

    def int2str(self, i: int) -> str:
        return self.names[i]


class FakeHFDataset:
    """Rows of dicts shaped like a Hugging Face ``Dataset`` with an Audio column (data, not a model mock):
    ``len``, ``ds[i]`` -> row dict (audio decoded), ``ds["col"]`` -> column list, ``.features``,
    ``.column_names``. Counts audio decodes in ``audio_reads``."""

    def __init__(self, rows: list[dict], features: dict | None = None):
        self._rows = rows
        self.features = features or {}
        self.column_names = list(rows[0])
        self.audio_reads = 0

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, key):
        if isinstance(key, str):
            return [row[key] for row in self._rows]
        self.audio_reads += 1
        return dict(self._rows[key])


def make_hf(n_per_label: int = 2) -> FakeHFDataset:
    """A fake HF dataset with ClassLabel ints over (neutral, happy, sad, angry) and two speakers."""
    names = ["neutral", "happy", "sad", "angry"]
    rows = []
    t = np.arange(int(RATE * SECONDS)) / RATE
    for k, name in enumerate(names):
        for j in range(n_per_label):
            rows.append({"audio": {"path": None, "array": 0.5 * np.sin(2 * np.pi * TONES[name] * t),
                                   "sampling_rate": RATE},
                         "emotion": k, "speaker_id": f"s{j}", "file": f"{name}_{j}.wav", "text": f"{name} {j}"})
    return FakeHFDataset(rows, {"audio": object(), "emotion": ClassLabel(names), "speaker_id": object(),
                                "file": object(), "text": object()})
