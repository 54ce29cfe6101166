"""The shipped demo LALM: a tiny real ``Qwen2AudioForConditionalGeneration`` trained on synthetic speech.

Its decoder MLP neurons carry the emotion decision (see ``docs/demo_model.md``), so the paper's signature
-- deactivating an emotion's ConAct/MAD neurons lowers that emotion's accuracy, random neurons do not --
can be reproduced in seconds on a CPU. Everything loads offline from the installed package.

Example::

    from esn_lens import Lens
    from esn_lens.demo_model import load_demo_model, demo_clips, DEMO_EMOTIONS, demo_prompt
    model, processor = load_demo_model()
    lens = Lens(model, processor)                      # the qwen2_audio adapter
    clips = demo_clips("unseen")                       # held-out speakers
    acc = constrained_accuracy(lens, clips)            # per-class accuracy, constrained scoring
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .answer_format import attach_answer_format, read_answer_format
from .data.clip import EmotionClip
from .errors import InputError
from .prompts import build_prompt

#: the demo model's classes, in its training order
DEMO_EMOTIONS: tuple[str, ...] = ("angry", "happy", "neutral", "sad")
#: the budget at which the demo's ESN claims are measured and tested (top 2 % of all units per emotion)
DEMO_TOP_FRAC = 0.02
#: the seed of the per-clip option shuffle used in training and evaluation
PROMPT_SEED = 0
ASSETS = Path(__file__).parent / "assets" / "demo"
SPLITS = ("identification", "unseen")


def demo_model_dir() -> Path:
    return ASSETS / "model"


def load_demo_model(path: str | Path | None = None) -> tuple[Any, Any]:
    """``(model, processor)`` of the shipped demo model, loaded offline with ``from_pretrained`` (eval mode).

    The model carries its answer format from its record (``esn_lens.json``: emotion *words*, generation read up
    to the first parsed answer), so ``SEREvaluator(lens, DEMO_EMOTIONS)`` reads its answers right by default."""
    from transformers import Qwen2AudioForConditionalGeneration, Qwen2AudioProcessor

    p = Path(path) if path is not None else demo_model_dir()
    if not (p / "config.json").is_file():
        raise InputError(f"demo model not found at {p} (expected save_pretrained files)")
    model = Qwen2AudioForConditionalGeneration.from_pretrained(str(p), local_files_only=True)
    processor = Qwen2AudioProcessor.from_pretrained(str(p), local_files_only=True)
    fmt = read_answer_format(p)
    if fmt is not None:  # the model's record: evaluators default to the format it was trained with
        attach_answer_format(model, fmt)
    return model.eval(), processor


def demo_clips(split: str = "unseen", root: str | Path | None = None) -> list[EmotionClip]:
    """The shipped clips of ``split``: ``"identification"`` (training speakers) or ``"unseen"`` (held-out speakers)."""
    if split not in SPLITS:
        raise InputError(f"unknown demo split {split!r}; expected one of {SPLITS}")
    base = (Path(root) if root is not None else ASSETS / "clips") / split
    return read_manifest(base)


def read_manifest(base: str | Path) -> list[EmotionClip]:
    """Clips of a ``manifest.csv`` folder (path,emotion,speaker,utterance_id,text)."""
    base = Path(base)
    if not (base / "manifest.csv").is_file():
        raise InputError(f"no manifest.csv in {base}")
    with open(base / "manifest.csv", newline="") as f:
        return [EmotionClip(r["utterance_id"], r["emotion"], path=base / r["path"], speaker=r.get("speaker", ""),
                            corpus="synthetic", text=r.get("text", "")) for r in csv.DictReader(f)]


def demo_prompt(clip_id: str, emotions: Sequence[str] = DEMO_EMOTIONS) -> str:
    """The SER prompt text of a clip (options shuffled per clip, seed :data:`PROMPT_SEED`)."""
    return build_prompt(emotions, clip_id, seed=PROMPT_SEED).text


def demo_evaluator(lens, emotions: Sequence[str] = DEMO_EMOTIONS, batch_size: int = 32):
    """The library's :class:`~esn_lens.evaluate.SEREvaluator` set up as the demo model was trained:
    constrained scoring over the emotion words (also the model's recorded format), options shuffled per clip with
    :data:`PROMPT_SEED`."""
    from .evaluate import SEREvaluator

    return SEREvaluator(lens, emotions, mode="constrained", answer="word", seed=PROMPT_SEED, batch_size=batch_size)


# ------------------------------------------------------------------------------------------ evaluation
# Thin conveniences over esn_lens.evaluate (one implementation of the protocol), used by the training
# script, the shipping script and the demo tests.
def predict(lens, clips: Sequence[EmotionClip], conditions: dict[str, list] | None = None, *,
            emotions: Sequence[str] = DEMO_EMOTIONS, batch_size: int = 32) -> dict[str, np.ndarray]:
    """Predicted emotion indices per condition (``"base"`` = the un-edited model), all conditions of a
    batch in one trace with the audio encoded once. ``conditions``: name -> list of edits."""
    from .interventions import Condition

    conds = [Condition("base")] + [Condition(k, list(v)) for k, v in (conditions or {}).items()]
    res = demo_evaluator(lens, emotions, batch_size).run(clips, conds)
    idx = {e: i for i, e in enumerate(emotions)}
    return {k: np.array([idx[p] for p in r.predictions]) for k, r in res.items()}


def per_class_accuracy(pred: np.ndarray, clips: Sequence[EmotionClip], emotions: Sequence[str] = DEMO_EMOTIONS
                       ) -> dict[str, float]:
    """Per-class accuracy of predicted indices (from :func:`predict`)."""
    y = np.array([list(emotions).index(c.emotion) for c in clips])
    return {e: float((pred[y == i] == i).mean()) if (y == i).any() else float("nan") for i, e in enumerate(emotions)}


def constrained_accuracy(lens, clips: Sequence[EmotionClip], emotions: Sequence[str] = DEMO_EMOTIONS, **kw
                         ) -> dict[str, float]:
    """Per-class accuracy of the un-edited model under constrained scoring."""
    return demo_evaluator(lens, emotions, **kw).run(clips)["baseline"].per_class()


def identification_stats(lens, clips: Sequence[EmotionClip], *, emotions: Sequence[str] = DEMO_EMOTIONS,
                         per_emotion: int | None = None, batch_size: int = 32, site: str = "act",
                         positions: str = "valid", seed: int = 0):
    """``(stats, pool)``: NeuronStats over the identification pool (correctly answered clips, balanced per
    emotion, at most ``per_emotion`` each), each clip read with its own SER prompt."""
    from .evaluate import identification_pool

    ev = demo_evaluator(lens, emotions, batch_size)
    pool = identification_pool(ev, clips, cap=per_emotion, seed=seed)
    stats = lens.collect_stats(pool, [ev.prompt(c).text for c in pool], emotions, site=site, positions=positions,
                               batch_size=batch_size, progress=False)
    return stats, pool


def deactivation_effects(lens, clips: Sequence[EmotionClip], neuron_sets: dict[str, Any], *,
                         emotions: Sequence[str] = DEMO_EMOTIONS, batch_size: int = 32) -> dict[str, Any]:
    """Deactivate each emotion's units of each NeuronSet; the paper's metrics in accuracy points.

    Returns ``{"base": per-class acc, selector: {"delta": (mask, eval) change, "SE", "ACE", "ESS", "se_per"}}``.
    """
    from .evaluate import accuracy_change_heatmap, deactivation_conditions, specificity
    from .interventions import Condition

    conds = [Condition.baseline()] + [c for name, ns in neuron_sets.items() for c in deactivation_conditions(ns, name=name)]
    res = demo_evaluator(lens, emotions, batch_size).run(clips, conds)
    out: dict[str, Any] = {"base": res["baseline"].per_class()}
    for name in neuron_sets:
        H = 100 * accuracy_change_heatmap(res, emotions, name=name)
        sp = specificity(H)
        out[name] = {"delta": H.round(2).tolist(), "SE": sp["se_mean"], "ACE": sp["ace_mean"], "ESS": sp["ess_mean"],
                     "se_per": dict(zip(emotions, sp["se"].round(2).tolist()))}
    return out


def steering_shares(lens, clips: Sequence[EmotionClip], neuron_set, alphas: Sequence[float] = (0, 0.5, 1, 2, 4), *,
                    emotions: Sequence[str] = DEMO_EMOTIONS, batch_size: int = 32) -> dict[str, list[float]]:
    """For each emotion, the share of all clips predicted as that emotion when its units get gain 1 + alpha."""
    from .evaluate import find_result, steering_conditions
    from .metrics import share

    res = demo_evaluator(lens, emotions, batch_size).run(clips, steering_conditions(neuron_set, alphas))
    return {e: [share(find_result(res, "steer", emotion=e, alpha=a).predictions, e) for a in alphas] for e in emotions}
