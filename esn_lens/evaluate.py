"""SER evaluation under interventions, and the paper's metrics.

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
from .interventions import Condition, Edit, make_edit
from .lens import Lens
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

    @property
    def n_unparsed(self) -> int:
        """Answers that named no single option (counted as wrong, never dropped)."""
        return sum(p is None for p in self.predictions)

    @property
    def accuracy(self) -> float:
        return float(np.mean([p == y for p, y in zip(self.predictions, self.labels)])) if self.labels else float("nan")

    def correct(self) -> np.ndarray:
        return np.array([p == y for p, y in zip(self.predictions, self.labels)], dtype=bool)

    def per_class(self) -> dict[str, float]:
        """Accuracy per true emotion (NaN for an emotion without clips)."""
        c, y = self.correct(), np.array(self.labels)
        return {e: (float(c[y == e].mean()) if (y == e).any() else float("nan")) for e in self.emotions}

    def share(self, emotion: str) -> float:
        """Fraction of all clips predicted as ``emotion``."""
        return float(np.mean([p == emotion for p in self.predictions])) if self.predictions else float("nan")

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
    (the emotion words). ``text_template``: for a text-only model, how a clip's transcript and the question
    are joined (``"{text}"`` and ``"{prompt}"``; default ``"Transcript: {text}\\n{prompt}"``, see
    :meth:`~esn_lens.lens.Lens.batch_clips`). Example:
    ``SEREvaluator(lens, ["angry", "happy"], mode="constrained").run(clips)``.
    """

    def __init__(self, lens: Lens, emotions: Sequence[str], *, mode: str = "constrained", answer: str = "digit",
                 template: str = DEFAULT_TEMPLATE, seed: int = 0, shuffle: bool = True, max_new_tokens: int = 20,
                 batch_size: int = 8, encoder_reuse: bool = True, text_template: str | None = None,
                 num_workers: int | None = None):
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
        check_choice("answer", answer, ANSWERS)
        self.lens, self.emotions = lens, tuple(emotions)
        self.mode, self.answer, self.template = mode, answer, template
        self.seed, self.shuffle, self.max_new_tokens, self.batch_size = seed, shuffle, max_new_tokens, batch_size
        self.encoder_reuse = encoder_reuse and lens.adapter.audio_tower_path is not None
        self.num_workers = num_workers  # input-building threads (None: machine default, 0: serial)
        if mode == "constrained":
            self._option_ids = self._option_token_ids()

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

        conditions = list(conditions) if conditions else [Condition("baseline", [])]
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
        for chunk, built in zip(chunks, prefetched(chunks, self._build_chunk, self.num_workers)):
            p, a = self._run_chunk(chunk, conditions, built)
            for n in names:
                preds[n].extend(p[n])
                answers[n].extend(a[n])
            bar.update(len(chunk))
        bar.close()
        labels = [c.emotion for c in clips]
        return {n: SERResult(n, self.emotions, labels, preds[n], answers[n]) for n in names}

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
            texts = self.lens.tokenizer.batch_decode(out.sequences[:, plen:], skip_special_tokens=True)
            for ci, cond in enumerate(conditions):
                t = texts[ci * n:(ci + 1) * n]
                answers[cond.name] = t
                preds[cond.name] = [parse_answer(s, p.options) for s, p in zip(t, prompts)]
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


def deactivation_conditions(neurons, kind: str = "deactivate", *, prefix: str = "",
                            emotions: Sequence[str] | None = None, **kwargs) -> list[Condition]:
    """Baseline + one condition ``{prefix}mask:<e>`` per emotion editing that emotion's neurons
    (``kind`` = a registered intervention; ``emotions`` restricts to those the set has)."""
    conds = [Condition("baseline", [])]
    for e in (emotions if emotions is not None else neurons.emotions):
        if e in neurons.emotions:
            conds.append(Condition(f"{prefix}mask:{e}", [make_edit(kind, neurons[e], site=neurons.site, **kwargs)]))
    return conds


def accuracy_change_heatmap(results: dict[str, SERResult], emotions: Sequence[str], *, prefix: str = "") -> np.ndarray:
    """Rows: emotion whose neurons are edited (``{prefix}mask:<e>``); columns: evaluated emotion; values: accuracy change."""
    base = results["baseline"].per_class()
    missing = [e for e in emotions if not np.isfinite(base.get(e, float("nan")))]
    if missing:  # a NaN cell would poison SE/ACE/ESS
        raise InputError(f"accuracy_change_heatmap: no evaluation clips of emotion(s) {missing}; "
                         "evaluate at least one clip of every emotion")
    H = np.zeros((len(emotions), len(emotions)))
    for i, m in enumerate(emotions):
        pc = results[f"{prefix}mask:{m}"].per_class()
        for j, e in enumerate(emotions):
            H[i, j] = pc[e] - base[e]
    return H


def specificity(heatmap: np.ndarray) -> dict[str, np.ndarray | float]:
    """SE(e) = H[e,e]; ACE(e) = mean over e' != e of H[e',e]; ESS = SE - ACE (and their means).

    With deactivation a specific set gives a negative SE and ACE near 0, i.e. a negative ESS.
    """
    H = np.asarray(heatmap, dtype=float)
    E = H.shape[0]
    if H.shape != (E, E) or E < 2:
        raise InputError(f"heatmap must be square with at least 2 emotions, got shape {H.shape}")
    se, ace, ess = se_ace_ess(H)
    return {"se": se, "ace": ace, "ess": ess, "se_mean": float(se.mean()), "ace_mean": float(ace.mean()),
            "ess_mean": float(ess.mean())}


def se_ace_ess(H: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SE, ACE and ESS per evaluated emotion of a heatmap, or of a stack of heatmaps (last two axes)."""
    E = H.shape[-1]
    se = np.diagonal(H, axis1=-2, axis2=-1).copy()
    ace = (H.sum(-2) - se) / (E - 1)
    return se, ace, se - ace


def target_shift(results: dict[str, SERResult], emotion: str, alphas: Sequence[float]) -> list[float]:
    """Share of clips predicted as ``emotion`` under ``steer:<emotion>:<alpha>`` minus the baseline share."""
    base = results["baseline"].share(emotion)
    return [results[f"steer:{emotion}:{a:g}"].share(emotion) - base for a in alphas]


def steering_conditions(neurons, alphas: Sequence[float], *, prefix: str = "",
                        emotions: Sequence[str] | None = None) -> list[Condition]:
    """Baseline + ``{prefix}steer:<e>:<alpha>``: steer(1 + alpha) of each emotion's neurons for each alpha."""
    conds = [Condition("baseline", [])]
    for e in (emotions if emotions is not None else neurons.emotions):
        if e not in neurons.emotions:
            continue
        for a in alphas:
            conds.append(Condition(f"{prefix}steer:{e}:{a:g}",
                                   [make_edit("steer", neurons[e], alpha=a, site=neurons.site)]))
    return conds


def bootstrap_ci(correct_edit: np.ndarray, correct_base: np.ndarray, *, n_boot: int = 1000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Paired bootstrap confidence interval of an accuracy change (same clips under two conditions)."""
    a, b = np.asarray(correct_edit, float), np.asarray(correct_base, float)
    if a.shape != b.shape or a.size == 0:
        raise InputError("bootstrap_ci needs two equal-length, non-empty arrays of per-clip correctness")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.size, size=(n_boot, a.size))
    d = a[idx].mean(1) - b[idx].mean(1)
    lo, hi = np.quantile(d, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)
