"""Any Hugging Face ``datasets.Dataset``-like object with an Audio column and a label column (duck-typed)."""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ...errors import InputError
from ..clip import EmotionClip
from .base import DATASETS, Record, corpus_layout, decode_audio_value

LAYOUT = ("a datasets.Dataset-like object: len(ds), ds[i] -> {audio_column: {'array', 'sampling_rate'}, "
          "label_column: str or ClassLabel int, ...}")
LABEL_COLUMNS = ("emotion", "label", "labels", "emotion_label", "major_emotion", "emotions")
SPEAKER_COLUMNS = ("speaker", "speaker_id", "spk_id", "client_id", "actor")
ID_COLUMNS = ("utterance_id", "id", "file", "file_id", "filename", "name")
TEXT_COLUMNS = ("text", "transcription", "transcript", "sentence", "utterance")


def _column_names(ds: Any) -> list[str]:
    for attr in ("column_names", "features"):
        names = getattr(ds, attr, None)
        if names is not None:
            return list(names)
    return list(ds[0].keys()) if len(ds) else []


def _pick(given: str | None, candidates: Sequence[str], columns: list[str], what: str, required: bool) -> str | None:
    if given is not None:
        if given not in columns:
            raise InputError(f"hf: {what} column {given!r} not in the dataset's columns {columns}")
        return given
    found = next((c for c in candidates if c in columns), None)
    if found is None and required:
        raise InputError(f"hf: no {what} column among {columns}; pass {what}_column=... (tried {list(candidates)})")
    return found


def _column(ds: Any, name: str | None) -> list[Any] | None:
    """A whole column without decoding audio (``ds[name]``), or row by row for list-like objects."""
    if name is None:
        return None
    try:
        values = ds[name]
        if len(values) == len(ds):
            return list(values)
    except (TypeError, KeyError, IndexError):
        pass
    return [ds[i][name] for i in range(len(ds))]


def _label_names(ds: Any, column: str) -> Callable[[Any], str]:
    features = getattr(ds, "features", None)
    feature = features.get(column) if hasattr(features, "get") else None
    if feature is not None and hasattr(feature, "int2str"):
        return lambda v: feature.int2str(int(v)) if not isinstance(v, str) else v
    return str


def _audio_loader(ds: Any, index: int, column: str) -> Callable[[EmotionClip], tuple[Any, int]]:
    def load(clip: EmotionClip) -> tuple[Any, int]:
        try:
            cell = ds[index][column]
        except ImportError as e:  # datasets >= 4 decodes Audio columns with torchcodec (and FFmpeg)
            raise InputError(f"clip {clip.utterance_id}: the dataset's Audio column cannot be decoded here ({e}); "
                             "install the 'hf' extra (pip install 'esn-lens[hf]': datasets + torchcodec, which needs "
                             f"FFmpeg), or read the files yourself: ds = ds.cast_column({column!r}, "
                             "datasets.Audio(decode=False))") from None
        return decode_audio_value(cell, f"clip {clip.utterance_id}")

    return load


@DATASETS.register("hf")
@corpus_layout(LAYOUT, takes_path=False)
def hf(ds: Any, *, audio_column: str = "audio", label_column: str | None = None, speaker_column: str | None = None,
       id_column: str | None = None, text_column: str | None = None, id_prefix: str = "hf") -> Iterator[Record]:
    """A Hugging Face dataset (or any object with ``len`` and ``ds[i] -> dict``): labels from
    ``label_column`` (default: the first of :data:`LABEL_COLUMNS` present; ClassLabel ints mapped with
    ``ds.features[col].int2str``), audio decoded only when a clip is loaded. Speaker, id and text columns
    are found the same way (ids default to ``<id_prefix>_<row>``).

    Example: ``load_dataset("hf", hf_ds, label_column="emotion", label_set="basic4")``.
    """
    if not hasattr(ds, "__len__") or not hasattr(ds, "__getitem__"):
        raise InputError(f"hf: expected a datasets.Dataset-like object, got {type(ds).__name__} ({LAYOUT})")
    columns = _column_names(ds)
    _pick(audio_column, (), columns, "audio", True)
    label_col = _pick(label_column, LABEL_COLUMNS, columns, "label", True)
    assert label_col is not None
    to_name = _label_names(ds, label_col)
    labels = _column(ds, label_col) or []
    speakers = _column(ds, _pick(speaker_column, SPEAKER_COLUMNS, columns, "speaker", False))
    ids = _column(ds, _pick(id_column, ID_COLUMNS, columns, "id", False))
    texts = _column(ds, _pick(text_column, TEXT_COLUMNS, columns, "text", False))
    for i, label in enumerate(labels):
        utt = str(ids[i]) if ids is not None and ids[i] not in (None, "") else f"{id_prefix}_{i}"
        yield Record(utt, "" if label is None else to_name(label), speaker="" if speakers is None else str(speakers[i] or ""),
                     text="" if texts is None else str(texts[i] or ""), where=f"row {i}",
                     loader=_audio_loader(ds, i, audio_column))
