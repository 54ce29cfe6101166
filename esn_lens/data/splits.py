"""Speaker-disjoint identification / evaluation splits, as in the paper (seeded, deterministic)."""
from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Iterable
from typing import Literal, NamedTuple

import numpy as np

from ..errors import InputError
from .dataset import EmotionDataset, speaker_key


class Split(NamedTuple):
    """The clips used to find neurons (``identification``) and the held-out clips (``evaluation``)."""

    identification: EmotionDataset
    evaluation: EmotionDataset


def _describe(speakers: list[str]) -> str:
    return f"[{', '.join(speakers)}]" if len(speakers) <= 20 else f"{len(speakers)} speakers"


def _pick_eval_speakers(counts: Counter[str], eval_fraction: float, seed: int) -> set[str]:
    """Speakers in a seeded random order; each joins evaluation when that brings its clip share closer to
    ``eval_fraction``. Both sides keep at least one speaker."""
    speakers = sorted(counts)
    order = [speakers[i] for i in np.random.default_rng(seed).permutation(len(speakers))]
    target, n_eval, chosen = eval_fraction * sum(counts.values()), 0, []
    for s in order:
        if abs(n_eval + counts[s] - target) < abs(n_eval - target):
            chosen.append(s)
            n_eval += counts[s]
    if not chosen:
        chosen.append(order[0])
    if len(chosen) == len(order):
        chosen.pop()
    return set(chosen)


def speaker_disjoint_split(dataset: EmotionDataset, *, eval_fraction: float = 0.5,
                           eval_speakers: Iterable[str] | None = None, seed: int = 0,
                           unknown_speakers: Literal["error", "drop"] = "error") -> Split:
    """Split by speaker so no speaker is on both sides.

    Either name the ``eval_speakers``, or let a seeded draw give evaluation about ``eval_fraction`` of the
    clips (whole speakers only). Clips without a speaker (``""``) cannot be placed: they raise, or are
    left out with ``unknown_speakers="drop"`` (noted in the manifest's history).

    Example: ``ident, evaluation = speaker_disjoint_split(ds, eval_speakers=["Ses05F", "Ses05M"])``.
    """
    nameless = [c.utterance_id for c in dataset if not c.speaker]
    if nameless:
        if unknown_speakers == "error":
            raise InputError(f"speaker_disjoint_split: {len(nameless)} clip(s) have no speaker (e.g. "
                             f"{', '.join(nameless[:3])}); pass unknown_speakers='drop' to leave them out")
        dataset = dataset.filter(lambda c: bool(c.speaker), name=f"drop {len(nameless)} clips without speaker")
    canon: dict[str, str] = {}  # one speaker however its id is written (case, spaces): the first spelling seen
    for c in dataset:
        canon.setdefault(speaker_key(c.speaker), c.speaker)

    def who(c) -> str:
        return canon[speaker_key(c.speaker)]

    counts = Counter(who(c) for c in dataset)
    if len(counts) < 2:
        raise InputError(f"speaker_disjoint_split: needs at least 2 speakers, found {len(counts)} {sorted(counts)}")
    if eval_speakers is not None:
        chosen = set(eval_speakers)
        unknown = sorted(chosen - set(counts))
        if unknown:
            raise InputError(f"speaker_disjoint_split: eval_speakers {unknown} not in the dataset; speakers: {sorted(counts)}")
        if not chosen or chosen == set(counts):
            raise InputError("speaker_disjoint_split: eval_speakers must leave at least one speaker on each side")
        how = "eval_speakers"
    else:
        if not 0.0 < eval_fraction < 1.0:
            raise InputError(f"speaker_disjoint_split: eval_fraction must be in (0, 1), got {eval_fraction}")
        chosen = _pick_eval_speakers(counts, eval_fraction, seed)
        how = f"eval_fraction={eval_fraction}, seed={seed}"
    ident_spk, eval_spk = sorted(set(counts) - chosen), sorted(chosen)
    ident = dataset.filter(lambda c: who(c) not in chosen,
                           name=f"speaker_disjoint_split({how}) identification {_describe(ident_spk)}")
    evaluation = dataset.filter(lambda c: who(c) in chosen,
                                name=f"speaker_disjoint_split({how}) evaluation {_describe(eval_spk)}")
    leak = {speaker_key(c.speaker) for c in ident} & {speaker_key(c.speaker) for c in evaluation}
    if leak:  # cannot happen by construction; a guard against a future change
        raise InputError(f"speaker_disjoint_split: speakers {sorted(leak)} on both sides")
    for side, part in (("identification", ident), ("evaluation", evaluation)):
        empty = [e for e, n in part.counts().items() if n == 0 and dataset.counts()[e] > 0]
        if empty:
            warnings.warn(f"speaker_disjoint_split: no {side} clips for {empty}", stacklevel=2)
    return Split(ident, evaluation)


def split_identification_evaluation(dataset: EmotionDataset, *, eval_fraction: float = 0.5,
                                    eval_speakers: Iterable[str] | None = None, eval_per_emotion: int | None = 200,
                                    identification_per_emotion: int | None = None, seed: int = 0,
                                    unknown_speakers: Literal["error", "drop"] = "error") -> Split:
    """The paper's protocol: a speaker-disjoint split, then at most ``eval_per_emotion`` (200) evaluation
    clips per emotion and optionally ``identification_per_emotion`` identification clips, drawn with ``seed``.

    Example: ``ident, ev = split_identification_evaluation(ds, seed=0); set(ident.speakers()) & set(ev.speakers()) == set()``.
    """
    ident, evaluation = speaker_disjoint_split(dataset, eval_fraction=eval_fraction, eval_speakers=eval_speakers,
                                               seed=seed, unknown_speakers=unknown_speakers)
    if eval_per_emotion is not None:
        evaluation = evaluation.cap_per_emotion(eval_per_emotion, seed=seed)
    if identification_per_emotion is not None:
        ident = ident.cap_per_emotion(identification_per_emotion, seed=seed)
    return Split(ident, evaluation)


__all__ = ["Split", "speaker_disjoint_split", "split_identification_evaluation"]
