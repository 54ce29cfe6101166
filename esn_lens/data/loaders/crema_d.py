"""CREMA-D, audio files ``AudioWAV/<actor>_<sentence>_<emotion>_<level>.wav``."""
from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from .base import DATASETS, Record, Skipped, audio_files, corpus_layout, find_corpus_root

LAYOUT = "AudioWAV/<actor 1001..1091>_<sentence>_<ANG|DIS|FEA|HAP|NEU|SAD>_<LO|MD|HI|XX>.wav"
_NAME = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Za-z]{3})_([A-Za-z]{1,2})$")
SENTENCES = {
    "IEO": "It's eleven o'clock", "TIE": "That is exactly what happened", "IOM": "I'm on my way to the meeting",
    "IWW": "I wonder what this is about", "TAI": "The airplane is almost full",
    "MTI": "Maybe tomorrow it will be cold", "IWL": "I would like a new alarm clock",
    "ITH": "I think I have a doctor's appointment", "DFA": "Don't forget a jacket",
    "ITS": "I think I've seen this before", "TSI": "The surface is slick", "WSI": "We'll stop in a couple of minutes",
}


@DATASETS.register("crema_d")
@corpus_layout(LAYOUT)
def crema_d(root: Path) -> Iterator[Record | Skipped]:
    """CREMA-D: the intended emotion from the file name's third field, speaker = actor id (first field),
    text from the sentence code. ``root`` may be the repository or its ``AudioWAV`` folder."""
    base = find_corpus_root(root, "AudioWAV")
    root = base / "AudioWAV" if (base / "AudioWAV").is_dir() else root
    for wav in audio_files(root):
        m = _NAME.match(wav.stem)
        if not m:
            yield Skipped(wav.name)
            continue
        actor, sentence, emotion, _ = m.groups()
        yield Record(wav.stem, emotion, path=wav, speaker=actor, text=SENTENCES.get(sentence, ""), where=wav.name)
