"""MSP-Podcast (UT Dallas), from ``Labels/labels_consensus.csv`` and ``Audios/``."""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from ...errors import InputError
from .base import DATASETS, Record, Skipped, corpus_layout, find_corpus_root, read_csv_rows

LAYOUT = ("Labels/labels_consensus.csv (columns FileName, EmoClass, EmoAct, EmoVal, EmoDom, SpkrID, Gender, "
          "Split_Set) and Audios/<FileName>")
#: SpkrID values that mean "speaker not identified" (kept with speaker "").
UNKNOWN_SPEAKERS = frozenset({"", "unknown", "nan", "none"})


@DATASETS.register("msp_podcast")
@corpus_layout(LAYOUT)
def msp_podcast(root: Path, *, split_sets: Sequence[str] | None = None, labels_file: str = "Labels/labels_consensus.csv",
                audio_dir: str = "Audios") -> Iterator[Record | Skipped]:
    """MSP-Podcast: one clip per row of the consensus labels; ``EmoClass`` A S H U F D C N O X (X = no
    agreement, always dropped). ``split_sets``: keep only these ``Split_Set`` values (e.g.
    ``("Train", "Development")``; others counted as ``filtered``). Speaker ``SpkrID`` (``""`` when
    ``Unknown``: speaker-disjoint splits must then drop them).
    """
    root = find_corpus_root(root, labels_file)
    label_path = root / labels_file
    if not label_path.is_file():
        raise InputError(f"msp_podcast: label file {label_path} not found (expected {LAYOUT})")
    wanted = None if split_sets is None else {s.lower() for s in split_sets}
    for line, row in read_csv_rows(label_path, ("FileName", "EmoClass", "SpkrID")):
        name = row["FileName"]
        if not name:
            yield Skipped(f"{label_path.name} line {line}")
            continue
        utt = Path(name).stem
        if wanted is not None and row.get("Split_Set", "").lower() not in wanted:
            yield Skipped(utt, "filtered")
            continue
        speaker = row["SpkrID"]
        yield Record(utt, row["EmoClass"], path=root / audio_dir / name,
                     speaker="" if speaker.lower() in UNKNOWN_SPEAKERS else speaker, where=f"{label_path.name} line {line}")
