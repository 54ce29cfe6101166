"""ESD (Emotional Speech Dataset, NUS/HLT), ``<speaker>/<Emotion>/[train|test|evaluation/]<speaker>_<utt>.wav``."""
from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

from .base import DATASETS, Record, Skipped, audio_files, corpus_layout, find_corpus_root, read_text

LAYOUT = ("<speaker 0001..0020>/<Angry|Happy|Neutral|Sad|Surprise>/[train|test|evaluation/]<speaker>_<utt>.wav, "
          "transcripts in <speaker>/<speaker>.txt")
_SPEAKER = re.compile(r"^\d{4}$")
_LANGUAGES = {"zh": range(1, 11), "en": range(11, 21)}


def _transcripts(speaker_dir: Path) -> dict[str, str]:
    path = speaker_dir / f"{speaker_dir.name}.txt"
    if not path.is_file():
        return {}
    out = {}
    for line in read_text(path, ("utf-8-sig", "gb18030", "latin-1")).splitlines():
        fields = re.split(r"\t+", line.strip())
        if len(fields) >= 2:
            out[fields[0]] = fields[1].strip()
    return out


@DATASETS.register("esd")
@corpus_layout(LAYOUT)
def esd(root: Path, *, language: Literal["en", "zh"] | None = None,
        partitions: Sequence[str] | None = None) -> Iterator[Record | Skipped]:
    """ESD: emotion from the folder name, speaker = the 4-digit speaker folder, text from the speaker's
    transcript file. Handles releases with and without ``train/test/evaluation`` subfolders.
    ``language``: ``"zh"`` (speakers 0001-0010) or ``"en"`` (0011-0020); ``partitions``: keep only these
    subfolders (e.g. ``("test",)``). Left-out files are counted as ``filtered``.
    """
    root = find_corpus_root(root, "[0-9][0-9][0-9][0-9]/*/")
    speaker_dirs = sorted(d for d in root.iterdir() if d.is_dir() and _SPEAKER.match(d.name)) if root.is_dir() else []
    for speaker_dir in speaker_dirs:
        keep_speaker = language is None or int(speaker_dir.name) in _LANGUAGES[language]
        text = _transcripts(speaker_dir) if keep_speaker else {}
        for emotion_dir in sorted(d for d in speaker_dir.iterdir() if d.is_dir()):
            for wav in audio_files(emotion_dir):
                inner = wav.relative_to(emotion_dir).parts[:-1]
                if not keep_speaker or (partitions is not None and not (inner and inner[0] in partitions)):
                    yield Skipped(wav.stem, "filtered")
                    continue
                yield Record(wav.stem, emotion_dir.name, path=wav, speaker=speaker_dir.name,
                             text=text.get(wav.stem, ""), where=str(wav.relative_to(root)))
