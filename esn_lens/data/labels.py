"""Label sets and label mapping: corpus raw labels -> canonical emotion names -> a chosen label set.

Three layers, applied in this order to every raw label a loader reads:

1. the user's override map (``label_map=``, keys matched case-insensitively; a value of ``None`` drops),
2. the corpus's own raw-label map (``CORPUS_LABELS[corpus]``), or, for generic corpora
   (``manifest``, ``hf``, a user's loader without a registered map), the common aliases in
   :data:`ALIASES` with any other label kept as written,
3. the label set: a mapped emotion outside it is *excluded* (an expected, counted drop, e.g.
   IEMOCAP ``fru`` under ``iemocap4``); a raw label nobody knows is *unmapped*: an
   :class:`InputError` naming the label, the file and the label set, or a counted drop with
   ``drop_unmapped=True``.

Label-set choices (``LABEL_SETS``; defaults per corpus in ``CorpusLabels.default_label_set``):

* ``iemocap4`` (IEMOCAP default): neutral, happy, sad, angry -- the standard IEMOCAP protocol, with
  ``exc`` (excited) merged into happy. Un-merge with ``label_map={"exc": "excited"}`` or drop it with
  ``label_map={"exc": None}``.
* ``iemocap5``: iemocap4 + frustrated (the most frequent remaining IEMOCAP class).
* ``meld5`` (MELD default) and ``msp5`` (MSP-Podcast default): neutral, happy, sad, angry, surprised --
  the four shared classes plus the most frequent fifth class the two corpora share, so that sets transfer
  across datasets. These mirror the paper's 5-way setup; check them against the paper's table if you
  need its exact classes and pass ``label_set=[...]`` otherwise.
* ``basic4`` = iemocap4's emotions under a corpus-neutral name; ``ekman7``: neutral + Ekman's six.
* One full set per acted corpus (``ravdess8``, ``crema_d6``, ``esd5``, ``tess7``), their defaults.
* ``"all"``: every emotion found (ordered as :data:`CANONICAL_EMOTIONS`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from ..errors import InputError
from ..registry import Registry

#: Canonical emotion names, in the order datasets list them.
CANONICAL_EMOTIONS: tuple[str, ...] = (
    "neutral", "happy", "sad", "angry", "fearful", "disgusted", "surprised",
    "calm", "contemptuous", "frustrated", "excited", "other",
)

#: Common spellings of the canonical names (used for generic corpora: manifest CSVs, HF datasets).
ALIASES: dict[str, str] = {
    **{e: e for e in CANONICAL_EMOTIONS},
    "neu": "neutral", "neutrality": "neutral",
    "hap": "happy", "happiness": "happy", "joy": "happy", "joyful": "happy",
    "sadness": "sad",
    "ang": "angry", "anger": "angry",
    "fea": "fearful", "fear": "fearful", "scared": "fearful", "afraid": "fearful",
    "dis": "disgusted", "disgust": "disgusted",
    "sur": "surprised", "surprise": "surprised", "ps": "surprised",
    "pleasant_surprise": "surprised", "pleasant_surprised": "surprised",
    "con": "contemptuous", "contempt": "contemptuous",
    "fru": "frustrated", "frustration": "frustrated",
    "exc": "excited", "excitement": "excited",
    "oth": "other",
}


@dataclass(frozen=True)
class LabelSet:
    """An ordered set of emotion names, e.g. ``LabelSet("iemocap4", ("neutral", "happy", "sad", "angry"))``."""

    name: str
    emotions: tuple[str, ...]
    description: str = ""

    def __post_init__(self) -> None:
        if not self.emotions or len(set(self.emotions)) != len(self.emotions):
            raise InputError(f"label set {self.name!r}: emotions must be non-empty and distinct, got {self.emotions}")

    def __contains__(self, emotion: object) -> bool:
        return emotion in self.emotions

    def __str__(self) -> str:
        return f"{self.name} [{', '.join(self.emotions)}]"


@dataclass(frozen=True)
class CorpusLabels:
    """A corpus's raw-label map (lower-case raw label -> canonical emotion, ``None`` = not an emotion)."""

    raw_to_emotion: Mapping[str, str | None]
    default_label_set: str = "all"
    description: str = ""


#: Named label sets. Register your own: ``LABEL_SETS.register("mine", LabelSet("mine", ("calm", "angry")))``.
LABEL_SETS: Registry[LabelSet] = Registry("label set")
#: Raw-label maps of the built-in corpora, by dataset name (``load_dataset`` looks the name up here).
CORPUS_LABELS: Registry[CorpusLabels] = Registry("corpus label map")


def _set(name: str, emotions: str, description: str) -> None:
    LABEL_SETS.register(name, LabelSet(name, tuple(emotions.split()), description))


_set("iemocap4", "neutral happy sad angry", "IEMOCAP standard 4 classes; exc merged into happy")
_set("iemocap5", "neutral happy sad angry frustrated", "IEMOCAP 4 classes + frustrated")
_set("meld5", "neutral happy sad angry surprised", "MELD 5 classes (joy -> happy)")
_set("msp5", "neutral happy sad angry surprised", "MSP-Podcast 5 classes")
_set("basic4", "neutral happy sad angry", "the four classes every corpus here has")
_set("ekman7", "neutral happy sad angry fearful disgusted surprised", "neutral + Ekman's six basic emotions")
_set("ravdess8", "neutral calm happy sad angry fearful disgusted surprised", "all RAVDESS emotions")
_set("crema_d6", "neutral happy sad angry fearful disgusted", "all CREMA-D emotions")
_set("esd5", "neutral happy sad angry surprised", "all ESD emotions")
_set("tess7", "neutral happy sad angry fearful disgusted surprised", "all TESS emotions")

CORPUS_LABELS.register("iemocap", CorpusLabels({
    "neu": "neutral", "hap": "happy", "exc": "happy", "sad": "sad", "ang": "angry", "fru": "frustrated",
    "sur": "surprised", "fea": "fearful", "dis": "disgusted", "oth": "other", "xxx": None,
}, "iemocap4", "EmoEvaluation majority labels; xxx = no agreement"))
CORPUS_LABELS.register("meld", CorpusLabels({
    "neutral": "neutral", "joy": "happy", "sadness": "sad", "anger": "angry", "surprise": "surprised",
    "fear": "fearful", "disgust": "disgusted",
}, "meld5", "the Emotion column of *_sent_emo.csv"))
CORPUS_LABELS.register("msp_podcast", CorpusLabels({
    "a": "angry", "s": "sad", "h": "happy", "u": "surprised", "f": "fearful", "d": "disgusted",
    "c": "contemptuous", "n": "neutral", "o": "other", "x": None,
}, "msp5", "EmoClass of labels_consensus.csv; X = no agreement"))
CORPUS_LABELS.register("ravdess", CorpusLabels({
    "01": "neutral", "02": "calm", "03": "happy", "04": "sad", "05": "angry", "06": "fearful",
    "07": "disgusted", "08": "surprised",
}, "ravdess8", "the third field (EE) of the file name"))
CORPUS_LABELS.register("crema_d", CorpusLabels({
    "ang": "angry", "dis": "disgusted", "fea": "fearful", "hap": "happy", "neu": "neutral", "sad": "sad",
}, "crema_d6", "the third field of the file name (intended emotion)"))
CORPUS_LABELS.register("esd", CorpusLabels({
    "angry": "angry", "happy": "happy", "neutral": "neutral", "sad": "sad", "surprise": "surprised",
}, "esd5", "the emotion folder name"))
CORPUS_LABELS.register("tess", CorpusLabels({
    "angry": "angry", "disgust": "disgusted", "fear": "fearful", "happy": "happy", "neutral": "neutral",
    "sad": "sad", "ps": "surprised", "surprise": "surprised", "surprised": "surprised",
    "pleasant_surprise": "surprised", "pleasant_surprised": "surprised",
}, "tess7", "the last field of the file name"))


def order_emotions(emotions: Sequence[str] | set[str]) -> tuple[str, ...]:
    """Sort emotion names canonically (``CANONICAL_EMOTIONS`` order, then others alphabetically).

    Example: ``order_emotions({"sad", "bored", "neutral"}) == ("neutral", "sad", "bored")``.
    """
    rank = {e: i for i, e in enumerate(CANONICAL_EMOTIONS)}
    return tuple(sorted(set(emotions), key=lambda e: (rank.get(e, len(rank)), e)))


def get_label_set(spec: str | Sequence[str] | LabelSet) -> LabelSet | None:
    """Resolve a label set: a registered name, a list of emotions, a LabelSet, or ``"all"`` (-> ``None``).

    Example: ``get_label_set("iemocap4").emotions == ("neutral", "happy", "sad", "angry")``.
    """
    if isinstance(spec, LabelSet):
        return spec
    if isinstance(spec, str):
        if spec == "all":
            return None
        if spec not in LABEL_SETS:
            raise InputError(f"unknown label set {spec!r}; registered: {', '.join(LABEL_SETS.names())}, "
                             "or pass a list of emotion names, or 'all'")
        return LABEL_SETS.get(spec)
    names = [str(e) for e in spec]
    return LabelSet("custom", tuple(names), "user-given list")


class LabelMapper:
    """Maps one corpus's raw labels to emotions of a label set; see the module docstring for the rules.

    ``mapper(raw, item, where)`` returns ``(emotion, None)`` for a kept label or ``(None, reason)`` with
    reason ``"excluded"`` / ``"unmapped"``; an unmapped label raises unless ``drop_unmapped``.

    Example: ``LabelMapper("iemocap", label_set="iemocap4")("exc", "u1", "f.txt") == ("happy", None)``.
    """

    def __init__(self, corpus: str, *, label_set: str | Sequence[str] | LabelSet | None = None,
                 label_map: Mapping[str | int, str | None] | None = None, drop_unmapped: bool = False,
                 corpus_labels: CorpusLabels | None = None):
        self.corpus = corpus
        if corpus_labels is None and corpus in CORPUS_LABELS:
            corpus_labels = CORPUS_LABELS.get(corpus)
        self.corpus_labels = corpus_labels
        if label_set is None:
            label_set = corpus_labels.default_label_set if corpus_labels is not None else "all"
        self.label_set = get_label_set(label_set)
        self.overrides: dict[str, str | None] = {}
        for raw, emotion in (label_map or {}).items():
            if emotion is not None and (not isinstance(emotion, str) or not emotion):
                raise InputError(f"label_map[{raw!r}] must be an emotion name or None, got {emotion!r}")
            self.overrides[str(raw).strip().lower()] = emotion
        self.drop_unmapped = drop_unmapped
        for raw, emotion in self.overrides.items():
            if (emotion is not None and self.label_set is not None and emotion not in self.label_set
                    and emotion not in CANONICAL_EMOTIONS):
                raise InputError(f"{corpus}: label_map maps {raw!r} to {emotion!r}, which is neither in label set "
                                 f"{self.label_set} nor a canonical emotion ({', '.join(CANONICAL_EMOTIONS)})")

    @property
    def label_set_name(self) -> str:
        """The label set with its emotions, e.g. ``"iemocap4 [neutral, happy, sad, angry]"`` (or ``"all"``)."""
        return "all" if self.label_set is None else str(self.label_set)

    def known_labels(self) -> list[str]:
        """Raw labels this corpus knows (for error messages)."""
        known = self.corpus_labels.raw_to_emotion if self.corpus_labels is not None else ALIASES
        return sorted(set(known) | set(self.overrides))

    def __call__(self, raw: str, item: str, where: str = "") -> tuple[str | None, str | None]:
        key = str(raw).strip().lower()
        explicit = True
        if key in self.overrides:
            emotion = self.overrides[key]
        elif self.corpus_labels is not None and key in self.corpus_labels.raw_to_emotion:
            emotion = self.corpus_labels.raw_to_emotion[key]
        elif self.corpus_labels is None and key:
            explicit = key in ALIASES
            emotion = ALIASES.get(key, key)
        else:
            return self._unmapped(raw, item, where)
        if emotion is None:
            return None, "excluded"
        if self.label_set is None or emotion in self.label_set:
            return emotion, None
        if explicit or emotion in CANONICAL_EMOTIONS:
            return None, "excluded"
        return self._unmapped(raw, item, where)

    def _unmapped(self, raw: str, item: str, where: str) -> tuple[str | None, str | None]:
        if self.drop_unmapped:
            return None, "unmapped"
        target = "all emotions" if self.label_set is None else f"label set {self.label_set}"
        raise InputError(
            f"{self.corpus}: unmapped label {raw!r} for {item}" + (f" in {where}" if where else "")
            + f" (mapping to {target}); known labels: {', '.join(self.known_labels())}. "
            f"Map it with label_map={{{str(raw)!r}: '<emotion>'}} or pass drop_unmapped=True to count it as dropped")


__all__ = [
    "CANONICAL_EMOTIONS", "ALIASES", "LabelSet", "CorpusLabels", "LABEL_SETS", "CORPUS_LABELS",
    "order_emotions", "get_label_set", "LabelMapper",
]
