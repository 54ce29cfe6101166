"""A model's answer format: how its SER answers are read, carried with the model so evaluators default to it.

A model trained to answer with the emotion *word* scores near chance when its answers are read as option
*digits* (the demo model: 27.8 % on sad instead of 91.7 %). So a model can carry its format in a record
(``esn_lens.json`` next to its weights; the shipped demo model has one) and :class:`~esn_lens.evaluate.SEREvaluator`
takes ``answer`` and ``stop`` from it when they are not given. A baseline near chance warns with the likely cause.

Example::

    fmt = answer_format_of(model)          # AnswerFormat(answer='word', stop='answer') for the demo model
    attach_answer_format(my_model, AnswerFormat(answer="word"))
"""
from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from .errors import InputError
from .vocab import ANSWERS, check_choice

__all__ = ["AnswerFormat", "MODEL_RECORD", "STOPS", "NearChanceWarning", "answer_format_of", "attach_answer_format",
           "read_answer_format", "warn_if_near_chance", "first_parsed_answer"]

#: the record file next to a model's weights
MODEL_RECORD = "esn_lens.json"
#: where a generated answer ends: at end of sequence / max_new_tokens ("eos", the paper's), or at the first
#: prefix of the generated tokens that names an option ("answer")
STOPS: tuple[str, ...] = ("eos", "answer")
_ATTR = "esn_lens_answer_format"


class NearChanceWarning(UserWarning):
    """The un-edited model's accuracy is near chance: the answer format or prompt probably does not fit the model."""


@dataclass(frozen=True)
class AnswerFormat:
    """``answer``: ``"digit"`` (option numbers) or ``"word"`` (emotion words) in constrained scoring and what a
    generated answer is expected to name; ``stop``: one of :data:`STOPS`."""

    answer: str = "digit"
    stop: str = "eos"

    def __post_init__(self):
        check_choice("answer", self.answer, ANSWERS)
        check_choice("stop", self.stop, STOPS)

    def describe(self, mode: str, emotions: Sequence[str]) -> str:
        """One line saying what is scored, e.g. for a report or a tutorial's output."""
        keys = [str(i + 1) for i in range(len(emotions))] if self.answer == "digit" else list(emotions)
        if mode == "constrained":
            return f"scored: the highest next-token logit among {keys} right after the prompt ({self.answer} answers)"
        end = "the first generated prefix that names an option" if self.stop == "answer" else "the whole generated text"
        return f"scored: {end}, parsed as a digit, number word or emotion word ({self.answer} answers expected)"


def read_answer_format(path: str | Path) -> AnswerFormat | None:
    """The format recorded in ``path/esn_lens.json`` (``{"answer_format": {"answer": ..., "stop": ...}}``), or None."""
    f = Path(path) / MODEL_RECORD
    if not f.is_file():
        return None
    try:
        rec = json.loads(f.read_text())["answer_format"]
        return AnswerFormat(**rec)
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(f"{f}: expected {{\"answer_format\": {{\"answer\": \"digit|word\", \"stop\": \"eos|answer\"}}}}, "
                         f"got an unreadable record ({type(e).__name__}: {e})") from None


def attach_answer_format(model: Any, fmt: AnswerFormat) -> Any:
    """Record ``fmt`` on ``model`` (an attribute; the weights are not touched); returns the model."""
    setattr(model, _ATTR, asdict(fmt))
    return model


def answer_format_of(model: Any) -> AnswerFormat:
    """The format attached to ``model`` (:func:`attach_answer_format`, done by ``load_demo_model``), else the default."""
    rec = getattr(model, _ATTR, None)
    return AnswerFormat(**rec) if isinstance(rec, dict) else AnswerFormat()


def warn_if_near_chance(accuracy: float, n_clips: int, n_emotions: int, *, answer: str, mode: str,
                        n_unparsed: int = 0, margin: float = 0.1, min_clips: int = 16) -> bool:
    """Warn (:class:`NearChanceWarning`) when an un-edited model's accuracy is within ``margin`` of chance
    (1 / n_emotions) over at least ``min_clips`` clips; returns whether it warned."""
    chance = 1.0 / n_emotions
    if n_clips < min_clips or not accuracy <= chance + margin:
        return False
    if mode == "generate" and n_unparsed > n_clips / 2:
        cause = (f"{n_unparsed} of {n_clips} answers named no option; look at the answers (SERResult.answers), "
                 "try stop='answer' or more max_new_tokens")
    else:
        other = "word" if answer == "digit" else "digit"
        cause = (f"answers are read as {answer!r}; if the model answers with the {'emotion word' if other == 'word' else 'option number'}, "
                 f"use answer={other!r} (or record the model's format with attach_answer_format)")
    warnings.warn(f"baseline accuracy {100 * accuracy:.1f}% is near chance ({100 * chance:.1f}%) on {n_clips} clips; "
                  f"likely cause: {cause}", NearChanceWarning, stacklevel=3)
    return True


def first_parsed_answer(tokenizer: Any, ids: Sequence[int], options: Sequence[str]) -> tuple[str, str | None]:
    """``(text, emotion)`` of the shortest prefix of the generated token ids whose text names an option
    (``stop="answer"``): ``"neutralneutral..."`` -> ``("neutral", "neutral")``. The whole text and None when no
    prefix parses."""
    from .prompts import parse_answer

    ids = list(ids)
    for k in range(1, len(ids) + 1):
        text = tokenizer.decode(ids[:k], skip_special_tokens=True)
        got = parse_answer(text, options)
        if got is not None:
            return text, got
    return tokenizer.decode(ids, skip_special_tokens=True), None
