"""SER evaluation under interventions; the paper's metrics on its results (computed by :mod:`esn_lens.metrics`).

Two modes: ``"generate"`` (the paper's protocol: greedy decoding, at most 20 new tokens, parsed answers)
and ``"constrained"`` (the options' token logits at the answer position: one forward, no generation).
Conditions (baseline, each emotion's mask, each alpha) are evaluated as batched rows of one trace
per batch of clips, with the audio encoder's output computed once and reused.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from .data.clip import EmotionClip
from .errors import InputError
from . import metrics
from .interventions import Condition, Edit, find_condition, make_edit
from .lens import Lens
from .answer_format import AnswerFormat, answer_format_of, first_parsed_answer, warn_if_near_chance
from .vocab import ANSWERS, MODES, check_choice
from .prompts import DEFAULT_TEMPLATE, SERPrompt, build_prompt, parse_answer

UNPARSED = None


@dataclass
class SERResult:
    """Predictions of one condition over a list of clips."""

    condition: str
    emotions: tuple[str, ...]
    labels: list[str]
    predictions: list[str | None]
    answers: list[str] = field(default_factory=list)
    #: the evaluated :class:`~esn_lens.interventions.Condition` (its kind, emotion, neuron set, alpha)
    spec: Condition | None = None

    @property
    def n_unparsed(self) -> int:
        """Answers that named no single option (counted as wrong, never dropped)."""
        return sum(p is None for p in self.predictions)

    @property
    def accuracy(self) -> float:
        return float(np.mean([p == y for p, y in zip(self.predictions, self.labels)])) if self.labels else float("nan")

    def correct(self) -> np.ndarray:
        return metrics.correct(self.predictions, self.labels).astype(bool)

    def per_class(self) -> dict[str, float]:
        """Accuracy per true emotion (NaN for an emotion without clips)."""
        return metrics.per_class(self.correct(), self.labels, self.emotions)

    def share(self, emotion: str) -> float:
        """Fraction of all clips predicted as ``emotion``."""
        return metrics.share(self.predictions, emotion)

    def confusion(self) -> np.ndarray:
        """Counts (true emotion x predicted emotion), last column = unparsed."""
        E = len(self.emotions)
        idx = {e: i for i, e in enumerate(self.emotions)}
        m = np.zeros((E, E + 1), dtype=np.int64)
        for y, p in zip(self.labels, self.predictions):
            m[idx[y], idx[p] if p is not None else E] += 1
        return m


class SEREvaluator:
    """Runs SER over clips for a list of conditions.

    ``answer``: how the options are read in constrained mode -- ``"digit"`` (option numbers) or ``"word"``
    (the emotion words); ``stop``: where a generated answer ends (``"eos"``: the whole text, the paper's;
    ``"answer"``: the first prefix that names an option). Both default to the model's recorded
    :class:`~esn_lens.answer_format.AnswerFormat` (the demo model: ``"word"``, ``"answer"``), else
    ``"digit"`` / ``"eos"``; :attr:`scoring` says in one line what is scored. A baseline near chance warns
    (:class:`~esn_lens.answer_format.NearChanceWarning`) with the likely cause. ``text_template``: for a text-only model, how a clip's transcript and the question
    are joined (``"{text}"`` and ``"{prompt}"``; default ``"Transcript: {text}\\n{prompt}"``, see
    :meth:`~esn_lens.lens.Lens.batch_clips`). Example:
    ``SEREvaluator(lens, ["angry", "sad"], mode="constrained").run(clips)``.
    """

    def __init__(self, lens: Lens, emotions: Sequence[str], *, mode: str = "constrained", answer: str | None = None,
                 template: str = DEFAULT_TEMPLATE, seed: int = 0, shuffle: bool = True, max_new_tokens: int = 20,
                 batch_size: int = 8, encoder_reuse: bool = True, text_template: str | None = None,
                 num_workers: int | None = None, stop: str | None = None):
        if text_template is not None:
            try:
                probe = text_template.format(text="\x00T", prompt="\x00P")
            except (KeyError, IndexError, ValueError, AttributeError) as e:
                raise InputError(f"text_template must be a format string with {{text}} and {{prompt}}, got "
                                 f"{text_template!r} ({type(e).__name__}: {e})") from None
            if "\x00P" not in probe:
                raise InputError(f"text_template must contain {{prompt}} (the SER question), got {text_template!r}")
        self.text_template = text_template
        check_choice("mode", mode, MODES)
        recorded = answer_format_of(lens.model)
        answer = recorded.answer if answer is None else answer
        check_choice("answer", answer, ANSWERS)
        self.format = AnswerFormat(answer, recorded.stop if stop is None else stop)
        self.stop = self.format.stop
        self.lens, self.emotions = lens, tuple(emotions)
        self.mode, self.answer, self.template = mode, answer, template
        self.seed, self.shuffle, self.max_new_tokens, self.batch_size = seed, shuffle, max_new_tokens, batch_size
        self.encoder_reuse = encoder_reuse and lens.adapter.audio_tower_path is not None
        self.num_workers = num_workers  # input-building threads (None: per device, serial on CPU; 0: serial)
        if mode == "constrained":
            self._option_ids = self._option_token_ids()

    @property
    def scoring(self) -> str:
        """What is scored, in one line (e.g. ``"scored: the highest next-token logit among ['angry', ...] ..."``)."""
        return self.format.describe(self.mode, self.emotions)

    # ------------------------------------------------------------------ prompts and answers
    def prompt(self, clip: EmotionClip) -> SERPrompt:
        return build_prompt(self.emotions, clip.utterance_id, seed=self.seed, shuffle=self.shuffle, template=self.template)

    def _option_token_ids(self) -> list[int]:
        tok = self.lens.tokenizer
        keys = [str(i + 1) for i in range(len(self.emotions))] if self.answer == "digit" else list(self.emotions)
        ids = []
        for k in keys:
            enc = tok(k, add_special_tokens=False).input_ids
            if not enc:
                raise InputError(f"the tokenizer gives no token for option {k!r}")
            ids.append(enc[0])
        if len(set(ids)) != len(ids):
            raise InputError(f"options {keys} do not start with distinct tokens; constrained scoring cannot tell them "
                             "apart (use answer='digit' or mode='generate')")
        return ids

    def _decide(self, logits: torch.Tensor, prompts: list[SERPrompt]) -> list[str | None]:
        scores = logits[:, self._option_ids]
        best = scores.argmax(-1).tolist()
        ok = torch.isfinite(scores).all(-1).tolist()  # NaN/inf logits (e.g. fp16 overflow): no answer, counted wrong
        if self.answer == "digit":
            return [p.options[b] if good else UNPARSED for p, b, good in zip(prompts, best, ok)]
        return [self.emotions[b] if good else UNPARSED for b, good in zip(best, ok)]

    # ------------------------------------------------------------------ running
    def run(self, clips: Sequence[EmotionClip], conditions: Sequence[Condition] | None = None, *,
            progress: bool = False) -> dict[str, SERResult]:
        """Evaluate every condition on ``clips``; returns condition name -> :class:`SERResult`.

        All conditions of a batch of clips run as one traced batch (rows = condition x clip).
        """
        from tqdm.auto import tqdm

        conditions = list(conditions) if conditions else [Condition.baseline()]
        names = [c.name for c in conditions]
        if len(set(names)) != len(names):
            raise InputError(f"condition names must be distinct, got {names}")
        clips = list(clips)
        if not clips:
            raise InputError("SER evaluation: no clips given")
        bad = sorted({c.emotion for c in clips} - set(self.emotions))
        if bad:
            raise InputError(f"clips have emotion label(s) {bad} outside the evaluated set {list(self.emotions)}")
        preds: dict[str, list] = {n: [] for n in names}
        answers: dict[str, list] = {n: [] for n in names}
        bar = tqdm(total=len(clips), desc="SER", unit="clip", disable=not progress)
        from .prefetch import prefetched

        chunks = [clips[s:s + self.batch_size] for s in range(0, len(clips), self.batch_size)]
        for chunk, built in zip(chunks, prefetched(chunks, self._build_chunk, self.num_workers,
                                                   device=self.lens.adapter.device)):
            p, a = self._run_chunk(chunk, conditions, built)
            for n in names:
                preds[n].extend(p[n])
                answers[n].extend(a[n])
            bar.update(len(chunk))
        bar.close()
        labels = [c.emotion for c in clips]
        out = {c.name: SERResult(c.name, self.emotions, labels, preds[c.name], answers[c.name], c) for c in conditions}
        for c in conditions:
            if not c.edits:  # an un-edited condition: near chance means the format or prompt does not fit the model
                r = out[c.name]
                warn_if_near_chance(r.accuracy, len(clips), len(self.emotions), answer=self.answer, mode=self.mode,
                                    n_unparsed=r.n_unparsed)
                break
        return out

    def _row_edits(self, conditions: Sequence[Condition], n: int) -> list[Edit]:
        C = len(conditions)
        out: list[Edit] = []
        for ci, cond in enumerate(conditions):
            rows = torch.zeros(C * n, dtype=torch.bool)
            rows[ci * n:(ci + 1) * n] = True
            for e in cond.edits:
                if e.rows is not None:
                    raise InputError(f"condition {cond.name!r}: its edits must not carry rows (rows are assigned per condition)")
                clone = type(e)(**{**e.__dict__, "rows": rows})
                out.append(clone)
        return out

    def _build_chunk(self, chunk: list[EmotionClip]):
        """The chunk's prompts and model inputs (CPU work; may run ahead in a prefetch thread)."""
        prompts = [self.prompt(c) for c in chunk]
        kw = {} if self.text_template is None else {"text_template": self.text_template}
        return prompts, self.lens.batch_clips(chunk, [p.text for p in prompts], **kw)

    def _run_chunk(self, chunk: list[EmotionClip], conditions: Sequence[Condition], built=None):
        prompts, base = built if built is not None else self._build_chunk(chunk)
        n, C = base.size, len(conditions)
        edits = self._row_edits(conditions, n)
        audio = None
        if self.encoder_reuse and C > 1:
            audio = self.lens.run(base, logits="none", keep_audio=True).audio
        tiled = base.tile(C) if C > 1 else base
        preds: dict[str, list] = {}
        answers: dict[str, list] = {}
        if self.mode == "constrained":
            out = self.lens.run(tiled, edits=edits, audio_cache=audio, logits="last")
            for ci, cond in enumerate(conditions):
                preds[cond.name] = self._decide(out.logits[ci * n:(ci + 1) * n], prompts)
                answers[cond.name] = [""] * n
        else:
            if audio is not None:
                audio = None  # generation re-runs the encoder inside generate; reuse applies to scoring
            out = self.lens.run(tiled, edits=edits, max_new_tokens=self.max_new_tokens, logits="none")
            plen = tiled.inputs["input_ids"].shape[1]
            new = out.sequences[:, plen:]
            if self.stop == "answer":
                tok = self.lens.tokenizer
                parsed = [first_parsed_answer(tok, new[i].tolist(), prompts[i % n].options) for i in range(new.shape[0])]
                texts, picks = [t for t, _ in parsed], [p for _, p in parsed]
            else:
                texts = self.lens.tokenizer.batch_decode(new, skip_special_tokens=True)
                picks = [parse_answer(s, prompts[i % n].options) for i, s in enumerate(texts)]
            for ci, cond in enumerate(conditions):
                answers[cond.name] = texts[ci * n:(ci + 1) * n]
                preds[cond.name] = picks[ci * n:(ci + 1) * n]
        return preds, answers


# ---------------------------------------------------------------------- pools and protocols
def identification_pool(evaluator: SEREvaluator, clips: Sequence[EmotionClip], *, cap: int | None = None,
                        balance: bool = True, seed: int = 0, progress: bool = False) -> list[EmotionClip]:
    """Clips the un-edited model answers correctly, balanced per emotion (truncated to the smallest class or ``cap``)."""
    res = evaluator.run(clips, progress=progress)["baseline"]
    return balanced_pool(clips, res.correct(), evaluator.emotions, cap=cap, balance=balance, seed=seed)


def balanced_pool(clips: Sequence[EmotionClip], correct: Sequence[bool] | np.ndarray, emotions: Sequence[str], *,
                  cap: int | None = None, balance: bool = True, seed: int = 0, min_per_emotion: int = 0
                  ) -> list[EmotionClip]:
    """The identification pool from per-clip correctness: the correct clips, balanced to the smallest emotion
    (or ``cap``), drawn with ``seed``. Raises :class:`InputError` naming emotions with fewer than
    ``min_per_emotion`` correct clips."""
    ok = [c for c, good in zip(clips, correct) if good]
    by = {e: [c for c in ok if c.emotion == e] for e in emotions}
    short = {e: len(v) for e, v in by.items() if len(v) < min_per_emotion}
    if short:
        total = {e: sum(c.emotion == e for c in clips) for e in emotions}
        raise InputError("identification pool: the un-edited model answered too few clips correctly for "
                         + ", ".join(f"{e} ({n} of {total[e]})" for e, n in short.items())
                         + "; use more identification clips, another answer mode, or check the model")
    rng = np.random.default_rng(seed)
    n = min(len(v) for v in by.values()) if balance else None
    if cap is not None:
        n = cap if n is None else min(n, cap)
    pool: list[EmotionClip] = []
    for e, v in by.items():
        order = rng.permutation(len(v))
        pool.extend(v[i] for i in (order[:n] if n is not None else order))
    return pool


def _set_name(name: str | None, prefix: str) -> str | None:
    """The neuron-set name of a builder call (``prefix="conact|"`` is the older spelling of ``name="conact"``)."""
    if name is None and prefix:
        name = prefix[:-1] if prefix.endswith("|") else prefix
    return name or None


def deactivation_conditions(neurons, kind: str = "deactivate", *, name: str | None = None,
                            emotions: Sequence[str] | None = None, prefix: str = "", **kwargs) -> list[Condition]:
    """One :meth:`Condition.deactivate <esn_lens.interventions.Condition.deactivate>` per emotion, editing that
    emotion's neurons with the registered intervention ``kind`` (``emotions`` restricts to those the set has;
    ``name``: the neuron set's name, shown in the condition names ``<name>|mask:<e>``). No baseline: evaluate
    ``[Condition.baseline(), *deactivation_conditions(ns)]``."""
    set_name = _set_name(name, prefix)
    return [Condition.deactivate(e, [make_edit(kind, neurons[e], site=neurons.site, **kwargs)], neurons=set_name)
            for e in (emotions if emotions is not None else neurons.emotions) if e in neurons.emotions]


def steering_conditions(neurons, alphas: Sequence[float], *, name: str | None = None,
                        emotions: Sequence[str] | None = None, prefix: str = "") -> list[Condition]:
    """One :meth:`Condition.steer <esn_lens.interventions.Condition.steer>` per emotion and alpha: steer
    (gain 1 + alpha) of that emotion's neurons (names ``<name>|steer:<e>:<alpha>``). No baseline (see
    :func:`deactivation_conditions`)."""
    set_name = _set_name(name, prefix)
    return [Condition.steer(e, a, [make_edit("steer", neurons[e], alpha=a, site=neurons.site)], neurons=set_name)
            for e in (emotions if emotions is not None else neurons.emotions) if e in neurons.emotions
            for a in alphas]


def find_result(results: dict[str, SERResult], kind: str, *, emotion: str | None = None, neurons: str | None = None,
                alpha: float | None = None) -> SERResult:
    """The result of the condition with these fields (results carry their :class:`Condition` as ``spec``;
    results without one are found by the name those fields give)."""
    specs = [r.spec for r in results.values() if r.spec is not None]
    if any(c.matches(kind, emotion=emotion, neurons=neurons, alpha=alpha) for c in specs):
        return results[find_condition(specs, kind, emotion=emotion, neurons=neurons, alpha=alpha).name]
    # a user's condition named like the library's (Condition("mask:angry", edits)) is found by that name
    key = Condition("", [], kind=kind, emotion=emotion, neurons=neurons, alpha=alpha).name
    if key not in results:
        raise InputError(f"no result for condition {key!r}; results: {list(results)}")
    return results[key]


def accuracy_change_heatmap(results: dict[str, SERResult], emotions: Sequence[str], *, name: str | None = None,
                            prefix: str = "") -> np.ndarray:
    """Rows: emotion whose neurons are edited (the deactivate conditions of the set ``name``); columns: evaluated
    emotion; values: accuracy change from the baseline (:func:`esn_lens.metrics.accuracy_change`)."""
    set_name = _set_name(name, prefix)
    base = find_result(results, "baseline")
    pc = base.per_class()
    missing = [e for e in emotions if not np.isfinite(pc.get(e, float("nan")))]
    if missing:  # a NaN cell would poison SE/ACE/ESS
        raise InputError(f"accuracy_change_heatmap: no evaluation clips of emotion(s) {missing}; "
                         "evaluate at least one clip of every emotion")
    rows = [find_result(results, "deactivate", emotion=m, neurons=set_name).correct() for m in emotions]
    H, _ = metrics.accuracy_change(rows, base.correct(), base.labels, emotions)
    return H


specificity = metrics.specificity
se_ace_ess = metrics.se_ace_ess


def target_shift(results: dict[str, SERResult], emotion: str, alphas: Sequence[float], *,
                 name: str | None = None) -> list[float]:
    """Share of clips predicted as ``emotion`` when its units are steered by each alpha minus the baseline share."""
    steered = [find_result(results, "steer", emotion=emotion, neurons=name, alpha=a).predictions for a in alphas]
    return metrics.target_shift(find_result(results, "baseline").predictions, steered, emotion)


def bootstrap_ci(correct_edit: np.ndarray, correct_base: np.ndarray, *, n_boot: int = 1000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Paired bootstrap confidence interval of an accuracy change (same clips under two conditions)."""
    return metrics.paired_bootstrap_ci(correct_edit, correct_base, n_boot=n_boot, level=level, seed=seed)
