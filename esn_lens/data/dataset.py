"""EmotionDataset: an ordered, lazily-read sequence of EmotionClips with the record of how it was made."""
from __future__ import annotations

import copy
from collections import Counter
from dataclasses import asdict, dataclass, field
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from ..errors import InputError
from .clip import EmotionClip
from .labels import order_emotions

#: Why a file or row was not kept (keys of ``Manifest.dropped``).
DROP_REASONS: dict[str, str] = {
    "excluded": "emotion outside the label set, or not an emotion (e.g. no agreement)",
    "unmapped": "raw label not mapped to any emotion (drop_unmapped=True)",
    "missing_file": "audio file listed but not on disk",
    "not_a_file": "listed path is not a regular file (a folder, device, FIFO or socket)",
    "unreadable": "audio file corrupt or unreadable (check_audio=True)",
    "unparsed": "file or row that does not follow the corpus's naming convention",
    "duplicate": "utterance id seen before",
    "filtered": "left out by a loader option (e.g. sessions=, splits=)",
}


def speaker_key(speaker: str) -> str:
    """A speaker id as compared: case and surrounding/repeated spaces ignored (``"SPK002 "`` is ``"spk002"``)."""
    return " ".join(str(speaker).split()).casefold()


@dataclass
class Manifest:
    """What a loader saw and what it kept: never lost, copied into every derived dataset.

    ``dropped`` maps a reason (see :data:`DROP_REASONS`) to the ids dropped for it; ``dropped_labels``
    counts the raw labels of label drops; ``load_failures`` lists clips whose audio failed to read after
    loading; ``history`` the operations applied since (filter, cap, split...).

    Example: ``ds.manifest.summary()`` -> ``"iemocap at /data: 10039 seen, 5531 kept, 4508 dropped (...)"``.
    """

    corpus: str = ""
    root: str = ""
    label_set: str = "all"
    seen: int = 0
    kept: int = 0
    dropped: dict[str, list[str]] = field(default_factory=dict)
    dropped_labels: dict[str, dict[str, int]] = field(default_factory=dict)
    load_failures: dict[str, str] = field(default_factory=dict)
    history: list[str] = field(default_factory=list)
    #: item -> what exactly was wrong, where a drop reason has a detail (e.g. ``"a FIFO"`` for ``not_a_file``)
    details: dict[str, str] = field(default_factory=dict)
    #: ids of clips whose file lies outside the corpus folder (allowed: a manifest may point anywhere)
    outside_root: list[str] = field(default_factory=list)
    #: speaker ids written differently for one speaker (case, spaces): spelling -> the one used
    merged_speakers: dict[str, str] = field(default_factory=dict)

    def drop(self, reason: str, item: str, raw_label: str | None = None, detail: str | None = None) -> None:
        """Record one dropped item (and its raw label, for label drops; what was wrong, for ``not_a_file``)."""
        self.dropped.setdefault(reason, []).append(item)
        if detail:
            self.details[item] = detail
        if raw_label is not None:
            labels = self.dropped_labels.setdefault(reason, {})
            labels[raw_label] = labels.get(raw_label, 0) + 1

    @property
    def n_dropped(self) -> int:
        """Total number of dropped items."""
        return sum(len(v) for v in self.dropped.values())

    def summary(self, max_items: int = 3) -> str:
        """One readable line: counts per drop reason, with raw labels or the first few ids."""
        where = f"{self.corpus or 'dataset'}" + (f" at {self.root}" if self.root else "")
        parts = []
        for reason, items in self.dropped.items():
            labels = self.dropped_labels.get(reason)
            if labels:
                detail = ", ".join(f"{k} {v}" for k, v in sorted(labels.items(), key=lambda kv: (-kv[1], kv[0])))
            else:
                detail = ", ".join(items[:max_items]) + (", ..." if len(items) > max_items else "")
            parts.append(f"{reason} {len(items)}: {detail}")
        line = f"{where} (label set {self.label_set}): {self.seen} seen, {self.kept} kept, {self.n_dropped} dropped"
        if parts:
            line += " (" + "; ".join(parts) + ")"
        if self.load_failures:
            line += f"; {len(self.load_failures)} failed to read after loading: " + ", ".join(list(self.load_failures)[:max_items])
        if self.history:
            line += "; then " + " -> ".join(self.history)
        return line

    def derive(self, step: str) -> "Manifest":
        """A copy with ``step`` appended to the history (used by every dataset operation)."""
        out = copy.deepcopy(self)
        out.history.append(step)
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


class EmotionDataset(Sequence[EmotionClip]):
    """An ordered sequence of :class:`EmotionClip` with a fixed emotion order and a :class:`Manifest`.

    Audio is not held: ``clip.load(rate)`` / :meth:`load_audio` read and resample it on demand. Every
    operation (``filter``, ``subset``, ``cap_per_emotion``...) returns a new dataset with the same
    emotion order and the manifest's history extended.

    Example: ``ds = load_dataset("ravdess", "/data/RAVDESS"); ds.counts()["angry"]``.
    """

    def __init__(self, clips: Iterable[EmotionClip], emotions: Sequence[str] | None = None, *,
                 manifest: Manifest | None = None):
        self._clips: list[EmotionClip] = list(clips)
        found = {c.emotion for c in self._clips}
        self.emotions: tuple[str, ...] = tuple(emotions) if emotions is not None else order_emotions(found)
        if len(set(self.emotions)) != len(self.emotions):
            raise InputError(f"emotions must be distinct, got {self.emotions}")
        stray = found - set(self.emotions)
        if stray:
            bad = next(c for c in self._clips if c.emotion in stray)
            raise InputError(f"clip {bad.utterance_id} has emotion {bad.emotion!r}, not in the dataset's "
                             f"emotions {list(self.emotions)}")
        self.manifest: Manifest = manifest if manifest is not None else Manifest(seen=len(self._clips), kept=len(self._clips))

    # --- sequence -----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._clips)

    def __getitem__(self, index: int | np.integer | slice) -> Any:
        if isinstance(index, slice):
            return self._derive(self._clips[index], f"[{index.start}:{index.stop}:{index.step}]")
        return self._clips[int(index)]

    def __iter__(self) -> Iterator[EmotionClip]:
        return iter(self._clips)

    def __repr__(self) -> str:
        counts = ", ".join(f"{e} {n}" for e, n in self.counts().items())
        name = self.manifest.corpus or "dataset"
        return f"EmotionDataset({name}: {len(self)} clips, {len(self.speakers())} speakers; {counts})"

    # --- views --------------------------------------------------------------------------------------
    @property
    def corpus(self) -> str:
        """The corpus name the clips came from (the manifest's)."""
        return self.manifest.corpus

    def emotion_ids(self) -> list[int]:
        """Index of each clip's emotion in :attr:`emotions`, in clip order."""
        index = {e: i for i, e in enumerate(self.emotions)}
        return [index[c.emotion] for c in self._clips]

    def counts(self) -> dict[str, int]:
        """Clips per emotion, in label-set order (0 for absent emotions)."""
        n = Counter(c.emotion for c in self._clips)
        return {e: n.get(e, 0) for e in self.emotions}

    def speakers(self) -> list[str]:
        """Sorted distinct speakers (``""`` = unknown)."""
        return sorted({c.speaker for c in self._clips})

    def by_emotion(self) -> dict[str, "EmotionDataset"]:
        """One dataset per emotion, in label-set order (empty ones included)."""
        return {e: self._derive([c for c in self._clips if c.emotion == e], f"by_emotion[{e}]") for e in self.emotions}

    def batches(self, batch_size: int, *, drop_last: bool = False) -> Iterator[list[EmotionClip]]:
        """Consecutive lists of ``batch_size`` clips (the last one shorter unless ``drop_last``)."""
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        for start in range(0, len(self._clips), batch_size):
            batch = self._clips[start:start + batch_size]
            if drop_last and len(batch) < batch_size:
                return
            yield batch

    # --- derived datasets ---------------------------------------------------------------------------
    def _derive(self, clips: list[EmotionClip], step: str, emotions: Sequence[str] | None = None) -> "EmotionDataset":
        return EmotionDataset(clips, self.emotions if emotions is None else emotions, manifest=self.manifest.derive(step))

    def filter(self, fn: Callable[[EmotionClip], bool], *, name: str = "") -> "EmotionDataset":
        """Clips for which ``fn(clip)`` is true. Example: ``ds.filter(lambda c: c.speaker != "Ses01F")``."""
        kept = [c for c in self._clips if fn(c)]
        return self._derive(kept, f"filter{'(' + name + ')' if name else ''}: {len(self)} -> {len(kept)}")

    def subset(self, indices: Iterable[int | np.integer] | None = None, *, emotions: Sequence[str] | None = None,
               speakers: Iterable[str] | None = None) -> "EmotionDataset":
        """Clips at ``indices`` (in that order), and/or of the given ``emotions`` (which become the
        label order) and ``speakers``. Example: ``ds.subset(emotions=["angry", "sad"])``."""
        clips = self._clips if indices is None else [self._clips[int(i)] for i in indices]
        if emotions is not None:
            unknown = [e for e in emotions if e not in self.emotions]
            if unknown:
                raise InputError(f"subset: emotions {unknown} not in the dataset's emotions {list(self.emotions)}")
            clips = [c for c in clips if c.emotion in set(emotions)]
        if speakers is not None:
            wanted = set(speakers)
            unknown = sorted(wanted - set(self.speakers()))
            if unknown:
                raise InputError(f"subset: speakers {unknown} not in the dataset; speakers: {self.speakers()}")
            clips = [c for c in clips if c.speaker in wanted]
        what = ", ".join(k for k, v in (("indices", indices), ("emotions", emotions), ("speakers", speakers)) if v is not None)
        return self._derive(list(clips), f"subset({what}): {len(self)} -> {len(clips)}", emotions)

    def cap_per_emotion(self, n: int, seed: int = 0) -> "EmotionDataset":
        """At most ``n`` clips per emotion, drawn at random (seeded), kept in their original order.

        Example: ``ds.cap_per_emotion(200, seed=0).counts()`` -> at most 200 each.
        """
        if n < 0:
            raise InputError(f"cap_per_emotion: n must be >= 0, got {n}")
        rng = np.random.default_rng(seed)
        keep: set[int] = set()
        for e in self.emotions:
            idx = [i for i, c in enumerate(self._clips) if c.emotion == e]
            if len(idx) > n:
                idx = [idx[j] for j in rng.permutation(len(idx))[:n]]
            keep.update(idx)
        clips = [c for i, c in enumerate(self._clips) if i in keep]
        short = [e for e, k in self.counts().items() if k < n]
        step = f"cap_per_emotion({n}, seed={seed}): {len(self)} -> {len(clips)}"
        return self._derive(clips, step + (f" (fewer than {n}: {', '.join(short)})" if short else ""))

    def shuffle(self, seed: int = 0) -> "EmotionDataset":
        """The same clips in a seeded random order."""
        order = np.random.default_rng(seed).permutation(len(self._clips))
        return self._derive([self._clips[i] for i in order], f"shuffle(seed={seed})")

    # --- audio --------------------------------------------------------------------------------------
    def load_audio(self, index: int | np.integer, target_rate: int | None = None) -> tuple[np.ndarray, int]:
        """Read clip ``index`` (resampled to ``target_rate``); a failure is recorded in the manifest's
        ``load_failures`` and re-raised as :class:`InputError` naming the clip."""
        clip = self._clips[int(index)]
        try:
            return clip.load(target_rate)
        except InputError as e:
            self.manifest.load_failures[clip.utterance_id] = str(e)
            raise

    def iter_audio(self, target_rate: int | None = None, *, skip_unreadable: bool = False
                   ) -> Iterator[tuple[EmotionClip, np.ndarray]]:
        """Yield ``(clip, audio)`` in order; unreadable clips raise, or are skipped (and recorded in the
        manifest's ``load_failures``) with ``skip_unreadable=True``."""
        for i, clip in enumerate(self._clips):
            try:
                audio, _ = self.load_audio(i, target_rate)
            except InputError:
                if skip_unreadable:
                    continue
                raise
            yield clip, audio


__all__ = ["DROP_REASONS", "Manifest", "EmotionDataset", "speaker_key"]
