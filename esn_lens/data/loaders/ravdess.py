"""RAVDESS (Ryerson), audio-only speech/song files ``Actor_XX/03-01-EE-II-SS-RR-AA.wav``."""
from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from .base import DATASETS, Record, Skipped, audio_files, corpus_layout, find_corpus_root

LAYOUT = "Actor_XX/MM-VV-EE-II-SS-RR-AA.wav (modality 03 audio-only, vocal channel 01 speech / 02 song)"
_NAME = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")
STATEMENTS = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}
_CHANNELS = {"speech": {"01"}, "song": {"02"}, "both": {"01", "02"}}


@DATASETS.register("ravdess")
@corpus_layout(LAYOUT)
def ravdess(root: Path, *, vocal_channel: Literal["speech", "song", "both"] = "speech") -> Iterator[Record | Skipped]:
    """RAVDESS: emotion from the third field (01 neutral, 02 calm, 03 happy, 04 sad, 05 angry, 06 fearful,
    07 disgust, 08 surprised), speaker ``Actor_AA`` from the last field, text from the statement field.
    ``vocal_channel``: keep speech (default), song or both (the rest counted as ``filtered``).
    """
    root = find_corpus_root(root, "Actor_*")
    for wav in audio_files(root):
        m = _NAME.match(wav.stem)
        if not m or m.group(1) != "03":
            yield Skipped(str(wav.relative_to(root)))
            continue
        _, channel, emotion, _, statement, _, actor = m.groups()
        if channel not in _CHANNELS[vocal_channel]:
            yield Skipped(wav.stem, "filtered")
            continue
        yield Record(wav.stem, emotion, path=wav, speaker=f"Actor_{actor}", text=STATEMENTS.get(statement, ""),
                     where=wav.name)
