"""IEMOCAP (USC SAIL), read from the official ``IEMOCAP_full_release`` layout."""
from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from .base import DATASETS, Record, Skipped, corpus_layout, find_corpus_root, read_text

LAYOUT = ("Session{1..5}/dialog/EmoEvaluation/<dialog>.txt (lines '[start - end]<TAB>utt<TAB>label<TAB>[V, A, D]') "
          "and Session{n}/sentences/wav/<dialog>/<utt>.wav")
_EVAL_LINE = re.compile(r"^\[\s*[\d.]+\s*-\s*[\d.]+\s*\]\s+(\S+)\s+(\S+)\s+\[")
_TRANSCRIPT_LINE = re.compile(r"^(\S+)\s+\[[^\]]*\]:\s?(.*)$")
_UTT = re.compile(r"^(Ses\d\d)[FM]_.+_([FM])[A-Za-z]*\d+$")


def iemocap_speaker(utterance_id: str) -> str:
    """The speaker of an utterance: session + the gender letter before the utterance number.

    Example: ``iemocap_speaker("Ses01F_impro01_M003") == "Ses01M"`` (the male actor of session 1).
    """
    m = _UTT.match(utterance_id)
    return f"{m.group(1)}{m.group(2)}" if m else ""


def _transcripts(session: Path, dialog: str) -> dict[str, str]:
    path = session / "dialog" / "transcriptions" / f"{dialog}.txt"
    if not path.is_file():
        return {}
    lines = (_TRANSCRIPT_LINE.match(line.strip()) for line in read_text(path).splitlines())
    return {m.group(1): m.group(2).strip() for m in lines if m}


@DATASETS.register("iemocap")
@corpus_layout(LAYOUT)
def iemocap(root: Path, *, sessions: Sequence[int] = (1, 2, 3, 4, 5)) -> Iterator[Record | Skipped]:
    """IEMOCAP: the majority label of each turn from ``dialog/EmoEvaluation/*.txt``, audio from
    ``sentences/wav``, text from ``dialog/transcriptions``; speaker ``Ses01F``/``Ses01M`` (session + gender
    of the speaking actor). Labels neu hap exc sad ang fru sur fea dis oth xxx (``xxx`` = no agreement,
    always dropped); ``exc`` merges into happy unless ``label_map={"exc": "excited"}``.
    ``sessions``: which of Session1..Session5 to read (others counted as ``filtered``).
    """
    root = find_corpus_root(root, "Session*/dialog/EmoEvaluation")
    for session in sorted(root.glob("Session*")):
        m = re.fullmatch(r"Session(\d+)", session.name)
        if not m or not session.is_dir():
            continue
        eval_dir = session / "dialog" / "EmoEvaluation"
        for eval_file in sorted(eval_dir.glob("*.txt")):
            if eval_file.name.startswith("._"):
                continue
            dialog = eval_file.stem
            text = _transcripts(session, dialog)
            for line_no, line in enumerate(read_text(eval_file).splitlines(), 1):
                hit = _EVAL_LINE.match(line.strip())
                if not hit:
                    continue
                utt, label = hit.groups()
                if int(m.group(1)) not in sessions:
                    yield Skipped(utt, "filtered")
                    continue
                yield Record(utt, label, path=session / "sentences" / "wav" / dialog / f"{utt}.wav",
                             speaker=iemocap_speaker(utt), text=text.get(utt, ""),
                             where=f"{eval_file.relative_to(root)} line {line_no}")
