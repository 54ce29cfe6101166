"""A generic corpus: ``manifest.csv`` with one row per clip (the layout the synthetic corpus is written in)."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from ...errors import InputError
from .base import DATASETS, Record, Skipped, corpus_layout, read_csv_rows

LAYOUT = "manifest.csv with columns path,emotion[,speaker,utterance_id,text] (path relative to the CSV's folder)"


@DATASETS.register("manifest")
@corpus_layout(LAYOUT)
def manifest(root: Path, *, filename: str = "manifest.csv") -> Iterator[Record | Skipped]:
    """Rows of ``root/<filename>`` (or ``root`` itself when it is a CSV file). Required columns ``path``
    and ``emotion``; optional ``speaker``, ``utterance_id`` (default: the path without its suffix) and
    ``text``. Labels go through the common aliases (``anger`` -> angry, ...); any other label is kept as
    written unless a ``label_set`` is given. Rows with an empty path or emotion are counted as ``unparsed``.

    Example row: ``wav/spk1/angry_001.wav,angry,spk1,spk1_angry_001,I am so angry``.
    """
    csv_path = root if root.is_file() else root / filename
    if not csv_path.is_file():
        raise InputError(f"manifest: {csv_path} not found (expected {LAYOUT})")
    base = csv_path.parent
    for line, row in read_csv_rows(csv_path, ("path", "emotion")):
        rel, label = row["path"], row["emotion"]
        if not rel or not label:
            yield Skipped(f"{csv_path.name} line {line}")
            continue
        utt = row.get("utterance_id") or str(PurePosixPath(rel.replace("\\", "/")).with_suffix(""))
        yield Record(utt, label, path=base / rel, speaker=row.get("speaker", ""), text=row.get("text", ""),
                     where=f"{csv_path.name} line {line}")
