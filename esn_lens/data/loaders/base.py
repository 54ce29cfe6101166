"""The dataset registry, ``load_dataset``, and the one helper every loader shares.

A loader is a function ``(root, **options) -> Iterable[Record | Skipped]``: it only reads the corpus's
layout and reports what it found. :func:`load_dataset` does the rest for every loader alike -- maps the
raw label, checks the file, counts every drop in the manifest -- so a user's corpus needs nothing more::

    from esn_lens.data import DATASETS, Record

    @DATASETS.register("my_corpus")
    def my_corpus(root, *, gender=None):
        for wav in sorted(root.glob("*/*.wav")):
            yield Record(wav.stem, label=wav.parent.name, path=wav, speaker=wav.stem.split("-")[0])

    ds = load_dataset("my_corpus", "/data/mine", label_map={"mad": "angry"})
"""
from __future__ import annotations

import csv
import inspect
import io
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InputError
from ...registry import Registry
from ..clip import EmotionClip
from ..dataset import DROP_REASONS, EmotionDataset, Manifest, speaker_key
from ..labels import LabelMapper, LabelSet, order_emotions

#: Corpus loaders by name. Built-ins register themselves here exactly as a user's loader does.
DATASETS: Registry[Callable[..., Iterable[Any]]] = Registry("dataset")


@dataclass(frozen=True)
class Record:
    """One utterance as a loader found it: its raw ``label``, and a ``path`` (or an in-memory ``loader``).

    ``where`` says where the label was read (e.g. ``"Ses01F_impro01.txt line 3"``) for error messages.
    """

    utterance_id: str
    label: str
    path: Path | None = None
    speaker: str = ""
    text: str = ""
    where: str = ""
    loader: Callable[[EmotionClip], tuple[Any, int]] | None = None


@dataclass(frozen=True)
class Skipped:
    """An item a loader saw but could not use; ``reason`` is a key of :data:`DROP_REASONS`."""

    item: str
    reason: str = "unparsed"


def corpus_layout(layout: str, *, takes_path: bool = True) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Attach the expected on-disk ``layout`` (shown in errors) to a loader; ``takes_path=False`` for
    loaders reading an in-memory object instead of a folder."""
    def mark(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn.layout = layout  # type: ignore[attr-defined]
        fn.takes_path = takes_path  # type: ignore[attr-defined]
        return fn
    return mark


def load_dataset(name: str, root: Any, *, label_set: str | Sequence[str] | LabelSet | None = None,
                 label_map: Mapping[str | int, str | None] | None = None, drop_unmapped: bool = False,
                 check_audio: bool = False, **options: Any) -> EmotionDataset:
    """Load a registered corpus into an :class:`EmotionDataset` (audio stays on disk until read).

    ``root``: the corpus folder (or, for ``"hf"``, a datasets.Dataset-like object). ``label_set``: a name
    in ``LABEL_SETS``, a list of emotions, or ``"all"`` (default: the corpus's default set).
    ``label_map``: raw label -> emotion overrides (``None`` drops). ``drop_unmapped``: count unknown labels
    as drops instead of raising. ``check_audio``: open every file's header now and drop unreadable ones.
    ``options``: the loader's own options (e.g. ``sessions=(1, 2)`` for IEMOCAP).

    Example: ``load_dataset("iemocap", "/data/IEMOCAP_full_release", label_set="iemocap4")``.
    """
    loader = DATASETS.get(name)
    _check_options(name, loader, options)
    layout = getattr(loader, "layout", None) or (inspect.getdoc(loader) or "").split("\n")[0]
    source = _resolve_source(name, root, layout, getattr(loader, "takes_path", True))
    mapper = LabelMapper(name, label_set=label_set, label_map=label_map, drop_unmapped=drop_unmapped)
    where = str(source) if isinstance(source, Path) else type(source).__name__
    manifest = Manifest(corpus=name, root=where, label_set=mapper.label_set_name)
    clips = collect_clips(name, loader(source, **options), mapper, manifest, check_audio=check_audio)
    if isinstance(source, Path):
        manifest.outside_root = outside(clips, source if source.is_dir() else source.parent)
    if not clips:
        raise InputError(f"{name}: no clips found in {where} (expected {layout}); {manifest.summary()}")
    emotions = mapper.label_set.emotions if mapper.label_set is not None else order_emotions({c.emotion for c in clips})
    return EmotionDataset(clips, emotions, manifest=manifest)


def collect_clips(corpus: str, items: Iterable[Record | Skipped], mapper: LabelMapper, manifest: Manifest,
                  *, check_audio: bool = False) -> list[EmotionClip]:
    """The shared step of every loader: map each record's label, check its file, count every drop."""
    clips: list[EmotionClip] = []
    seen_ids: set[str] = set()
    speakers: dict[str, str] = {}  # normalised speaker id -> the spelling first seen (used for all its clips)
    for rec in items:
        manifest.seen += 1
        if isinstance(rec, Skipped):
            if rec.reason not in DROP_REASONS:
                raise InputError(f"{corpus}: unknown drop reason {rec.reason!r}; one of {list(DROP_REASONS)}")
            manifest.drop(rec.reason, rec.item)
            continue
        if rec.utterance_id in seen_ids:
            manifest.drop("duplicate", rec.utterance_id)
            continue
        seen_ids.add(rec.utterance_id)
        emotion, reason = mapper(rec.label, rec.utterance_id, rec.where or (str(rec.path) if rec.path else ""))
        if emotion is None:
            manifest.drop(reason or "excluded", rec.utterance_id, raw_label=rec.label)
            continue
        if rec.loader is None:
            kind = path_problem(rec.path)
            if kind is not None:
                if kind == "missing":
                    manifest.drop("missing_file", rec.utterance_id)
                else:
                    manifest.drop("not_a_file", rec.utterance_id, detail=f"listed path {rec.path} is {kind}, not an audio file")
                continue
        speaker = speakers.setdefault(speaker_key(rec.speaker), rec.speaker.strip())
        if speaker != rec.speaker:
            manifest.merged_speakers[rec.speaker] = speaker
        clip = EmotionClip(rec.utterance_id, emotion, path=rec.path, speaker=speaker, corpus=corpus,
                           text=rec.text, raw_label=rec.label, loader=rec.loader)
        if check_audio and not audio_is_readable(clip):
            manifest.drop("unreadable", rec.utterance_id)
            continue
        clips.append(clip)
    manifest.kept = len(clips)
    return clips


def path_problem(path: Path | None) -> str | None:
    """None for a regular file (or a link to one); else ``"missing"`` or what the path is (``"a folder"``, ``"a
    FIFO"``, ``"a character device"``, ...)."""
    import stat

    if path is None:
        return "missing"
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "missing"
    except OSError as e:
        return f"unreachable ({e.strerror or e})"
    for test, what in ((stat.S_ISREG, None), (stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return what
    return "not a regular file"


def outside(clips: Sequence[EmotionClip], root: Path) -> list[str]:
    """Ids of clips whose file (links resolved) is not under ``root`` (links resolved)."""
    base = os.path.realpath(root)
    return [c.utterance_id for c in clips if c.path is not None
            and os.path.commonpath([base, os.path.realpath(c.path)]) != base]


def audio_is_readable(clip: EmotionClip) -> bool:
    """True when the clip's audio opens: the file header for files (fast), a full decode otherwise."""
    try:
        if clip.loader is None and clip.path is not None:
            import soundfile as sf

            return sf.info(str(clip.path)).frames > 0
        clip.load()
        return True
    except Exception:  # soundfile and decoders raise many types for damaged audio
        return False


def _check_options(name: str, loader: Callable[..., Any], options: Mapping[str, Any]) -> None:
    params = list(inspect.signature(loader).parameters.values())[1:]
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    accepted = [p.name for p in params]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise InputError(f"{name}: unknown option(s) {unknown}; this loader accepts: {', '.join(accepted) or '(none)'}")


def _resolve_source(name: str, root: Any, layout: str, takes_path: bool) -> Any:
    if isinstance(root, (str, os.PathLike)):
        if not takes_path:
            raise InputError(f"{name}: expects an in-memory dataset object, got the path {root!s} ({layout})")
        path = Path(root).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"{name}: corpus root {path} does not exist (expected {layout})")
        return path
    if takes_path:
        raise InputError(f"{name}: root must be a folder path, got {type(root).__name__} (expected {layout})")
    return root


# --- small helpers the loaders share ------------------------------------------------------------------
def find_corpus_root(root: Path, pattern: str, max_depth: int = 2) -> Path:
    """``root``, or the first folder up to ``max_depth`` below it, that contains ``pattern`` (a glob):
    lets users pass the folder above the release (``IEMOCAP/`` instead of ``IEMOCAP_full_release/``)."""
    if root.is_dir() and any(root.glob(pattern)):
        return root
    level = [root]
    for _ in range(max_depth):
        level = sorted(d for parent in level if parent.is_dir() for d in parent.iterdir() if d.is_dir())
        for d in level:
            if any(d.glob(pattern)):
                return d
    return root


def audio_files(folder: Path, suffixes: tuple[str, ...] = (".wav",)) -> list[Path]:
    """Audio files under ``folder`` (recursive, sorted), skipping macOS ``._`` resource forks."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in suffixes and not p.name.startswith("._")
                  and p.is_file())


def read_text(path: Path, encodings: tuple[str, ...] = ("utf-8-sig", "cp1252", "latin-1")) -> str:
    """A text file decoded with the first encoding that works (corpus files are not all UTF-8)."""
    data = path.read_bytes()
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):  # UTF-16 only with a BOM: without one it decodes anything
        return data.decode("utf-16")
    for enc in encodings:
        try:
            return data.decode(enc)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


def read_csv_rows(path: Path, required: Sequence[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """``(line number, row)`` of a CSV file with a header; :class:`InputError` naming missing columns."""
    if not path.is_file():
        return
    reader = csv.DictReader(io.StringIO(read_text(path), newline=""))
    try:
        fields = [f.strip() for f in (reader.fieldnames or [])]
    except csv.Error as e:
        raise InputError(f"{path} line 1: not a readable CSV header ({e})") from None
    missing = [c for c in required if c not in fields]
    if missing:
        raise InputError(f"{path}: missing column(s) {missing}; found {fields}")
    reader.fieldnames = fields
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:  # e.g. a cell longer than csv.field_size_limit() (131,072 characters)
            raise InputError(f"{path} line {reader.line_num + 1}: not a readable CSV row ({e})") from None
        yield reader.line_num, {k: (v or "").strip() for k, v in row.items() if k is not None}


def decode_audio_value(value: Any, name: str) -> tuple[np.ndarray, int]:
    """Audio from a Hugging Face Audio cell: ``{"array", "sampling_rate"}``, ``{"path"|"bytes"}``, or a
    torchcodec ``AudioDecoder`` (datasets >= 4)."""
    if value is None:
        raise InputError(f"{name}: no audio (None)")
    if isinstance(value, Mapping):
        if value.get("array") is not None:
            return np.asarray(value["array"]), int(value["sampling_rate"])
        src = io.BytesIO(value["bytes"]) if value.get("bytes") else value.get("path")
        if src is None:
            raise InputError(f"{name}: audio cell has neither array, bytes nor path")
        from ..clip import READ_LIMIT_SECONDS, read_audio_file

        return read_audio_file(src, None, READ_LIMIT_SECONDS, name)  # capped, rate checked, downmixed
    if hasattr(value, "get_all_samples"):
        samples = value.get_all_samples()
        data = samples.data.detach().cpu().numpy() if hasattr(samples.data, "detach") else np.asarray(samples.data)
        return data.mean(axis=0) if data.ndim == 2 else data, int(samples.sample_rate)
    raise InputError(f"{name}: unsupported audio value of type {type(value).__name__}")


__all__ = [
    "DATASETS", "Record", "Skipped", "corpus_layout", "load_dataset", "collect_clips", "audio_is_readable",
    "speaker_key", "path_problem", "outside",
    "find_corpus_root", "audio_files", "read_text", "read_csv_rows", "decode_audio_value",
]
