"""MELD (Friends TV series), from the official ``*_sent_emo.csv`` label files and audio extracted by the user."""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from ...errors import InputError
from .base import DATASETS, Record, Skipped, corpus_layout, find_corpus_root, read_csv_rows

#: Audio folders tried per split, in order: the names used when extracting audio, then MELD.Raw's video folders.
DEFAULT_AUDIO_DIRS: dict[str, tuple[str, ...]] = {
    "train": ("train", "train_splits", "train_audio", "audio/train"),
    "dev": ("dev", "dev_splits_complete", "dev_audio", "audio/dev"),
    "test": ("test", "output_repeated_splits_test", "test_audio", "audio/test"),
}
LAYOUT = ("{train,dev,test}_sent_emo.csv (columns Sr No., Utterance, Speaker, Emotion, ..., Dialogue_ID, "
          "Utterance_ID) and audio <split>/dia{D}_utt{U}.wav (extract it from the .mp4 files, e.g. "
          "ffmpeg -i dia0_utt0.mp4 -ac 1 -ar 16000 dia0_utt0.wav)")
_COLUMNS = ("Utterance", "Speaker", "Emotion", "Dialogue_ID", "Utterance_ID")


def _audio_dir(root: Path, split: str, audio_dirs: Mapping[str, str] | None) -> Path:
    if audio_dirs is not None:
        if split not in audio_dirs:
            raise InputError(f"meld: audio_dirs has no folder for split {split!r}; got {dict(audio_dirs)}")
        return root / audio_dirs[split]
    candidates = DEFAULT_AUDIO_DIRS.get(split, (split,))
    return next((root / c for c in candidates if (root / c).is_dir()), root / candidates[0])


@DATASETS.register("meld")
@corpus_layout(LAYOUT)
def meld(root: Path, *, splits: Sequence[str] = ("train", "dev", "test"), audio_dirs: Mapping[str, str] | None = None,
         audio_ext: str = ".wav") -> Iterator[Record | Skipped]:
    """MELD: one clip per row of ``<split>_sent_emo.csv``; audio ``<audio dir>/dia{D}_utt{U}<audio_ext>``.

    ``audio_dirs``: split -> folder relative to ``root`` (default: the first that exists of
    :data:`DEFAULT_AUDIO_DIRS`, i.e. ``train/``, ``dev/``, ``test/`` or MELD.Raw's ``train_splits/``,
    ``dev_splits_complete/``, ``output_repeated_splits_test/``). Clip ids are ``<split>_dia{D}_utt{U}``;
    the speaker is the character name (``Speaker`` column), the text the ``Utterance`` column.
    """
    root = find_corpus_root(root, "*_sent_emo.csv")
    for split in splits:
        label_file = root / f"{split}_sent_emo.csv"
        if not label_file.is_file():
            raise InputError(f"meld: label file {label_file} not found (splits={list(splits)}; expected {LAYOUT})")
        folder = _audio_dir(root, split, audio_dirs)
        for line, row in read_csv_rows(label_file, _COLUMNS):
            dia, utt = row["Dialogue_ID"], row["Utterance_ID"]
            if not dia.isdigit() or not utt.isdigit():
                yield Skipped(f"{label_file.name} line {line}")
                continue
            name = f"dia{dia}_utt{utt}"
            yield Record(f"{split}_{name}", row["Emotion"], path=folder / f"{name}{audio_ext}", speaker=row["Speaker"],
                         text=row["Utterance"], where=f"{label_file.name} line {line}")
