"""TESS (Toronto emotional speech set), ``<OAF|YAF>_<emotion>/<OAF|YAF>_<word>_<emotion>.wav``."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from .base import DATASETS, Record, Skipped, audio_files, corpus_layout, find_corpus_root

LAYOUT = "<OAF|YAF>_<emotion>/<OAF|YAF>_<word>_<angry|disgust|fear|happy|neutral|ps|sad>.wav"


@DATASETS.register("tess")
@corpus_layout(LAYOUT)
def tess(root: Path) -> Iterator[Record | Skipped]:
    """TESS: emotion from the file name's last field (``ps`` = pleasant surprise -> surprised), speaker
    ``OAF``/``YAF`` (first field), text ``"Say the word <word>"``. A copy nested twice (as on Kaggle) is
    read once: repeated ids are counted as ``duplicate``."""
    root = find_corpus_root(root, "[OY]AF_*")
    for wav in audio_files(root):
        fields = wav.stem.split("_")
        if len(fields) < 3:
            yield Skipped(str(wav.relative_to(root)))
            continue
        speaker, word, label = fields[0].upper(), fields[1], "_".join(fields[2:]).lower()
        yield Record(wav.stem, label, path=wav, speaker=speaker, text=f"Say the word {word}", where=wav.name)
