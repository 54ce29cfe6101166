"""The SER prompt of the paper's protocol and the answer parser.

The dataset's emotions become numbered options in a random (seeded, per clip) order; the model
answers freely and :func:`parse_answer` reads the digit, then a spelled-out number, then an emotion word.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Sequence

DEFAULT_TEMPLATE = ("What emotion does the speaker express? Choose one option.\n{options}\n"
                    "Answer with the option number.")
OPTION_FORMAT = "{number}. {emotion}"
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                "eleven", "twelve"]
ORDINALS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7, "eighth": 8}


@dataclass(frozen=True)
class SERPrompt:
    """One clip's prompt: the text and the emotion behind each option number (1-based)."""

    text: str
    options: tuple[str, ...]

    def option_of(self, emotion: str) -> int:
        return self.options.index(emotion) + 1


def option_order(emotions: Sequence[str], clip_id: str, seed: int = 0, shuffle: bool = True) -> tuple[str, ...]:
    """The options' order for a clip: a permutation seeded by (seed, clip id), stable across runs."""
    opts = list(emotions)
    if shuffle:
        random.Random(f"{seed}:{clip_id}").shuffle(opts)
    return tuple(opts)


def build_prompt(emotions: Sequence[str], clip_id: str = "", *, seed: int = 0, shuffle: bool = True,
                 template: str = DEFAULT_TEMPLATE) -> SERPrompt:
    """The single-choice SER prompt. Example: ``build_prompt(["angry", "sad"], "c1").text``."""
    if "{options}" not in template:
        raise ValueError("prompt template must contain '{options}'")
    opts = option_order(emotions, clip_id, seed, shuffle)
    lines = "\n".join(OPTION_FORMAT.format(number=i + 1, emotion=e) for i, e in enumerate(opts))
    return SERPrompt(template.format(options=lines, emotions=", ".join(emotions)), opts)


def parse_answer(answer: str, options: Sequence[str]) -> str | None:
    """The emotion an answer names, or None when it cannot be parsed (counted, never dropped).

    Order: an option digit; a spelled-out number or ordinal; exactly one emotion word (ambiguous -> None).
    Examples: ``parse_answer("Option 3.", opts)``, ``parse_answer("three", opts)``,
    ``parse_answer("I think the speaker sounds angry", opts)``; ``"angry or sad"`` -> None.
    """
    text = answer.strip().lower()
    if not text:
        return None
    n = len(options)
    digits = [int(d) for d in re.findall(r"(?<![\d.])(\d{1,2})(?!\d)", text)]
    valid = sorted({d for d in digits if 1 <= d <= n})
    if len(valid) == 1:
        return options[valid[0] - 1]
    if len(valid) > 1:
        return None
    words = re.findall(r"[a-z]+", text)
    ords = sorted({ORDINALS[w] for w in words if w in ORDINALS and ORDINALS[w] <= n})
    # an ordinal wins over number words ("the third one": "one" is a pronoun there)
    nums = ords or sorted({NUMBER_WORDS.index(w) for w in words if w in NUMBER_WORDS and 1 <= NUMBER_WORDS.index(w) <= n})
    if len(nums) == 1:
        return options[nums[0] - 1]
    if len(nums) > 1:
        return None
    named = [o for o in options if re.search(rf"\b{re.escape(o.lower())}\b", text)]
    return named[0] if len(named) == 1 else None
