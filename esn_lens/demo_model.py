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

from .data.clip import EmotionClip
from .errors import InputError
from .prompts import build_prompt

DEMO_EMOTIONS: tuple[str, ...] = ("angry", "happy", "neutral", "sad")
#: the seed of the per-clip option shuffle used in training and evaluation
PROMPT_SEED = 0
ASSETS = Path(__file__).parent / "assets" / "demo"
SPLITS = ("identification", "unseen")


def demo_model_dir() -> Path:
    return ASSETS / "model"


def load_demo_model(path: str | Path | None = None) -> tuple[Any, Any]:
    """``(model, processor)`` of the shipped demo model, loaded offline with ``from_pretrained`` (eval mode)."""
    from transformers import Qwen2AudioForConditionalGeneration, Qwen2AudioProcessor

    p = Path(path) if path is not None else demo_model_dir()
    if not (p / "config.json").is_file():
        raise InputError(f"demo model not found at {p} (expected save_pretrained files)")
    model = Qwen2AudioForConditionalGeneration.from_pretrained(str(p), local_files_only=True)
    processor = Qwen2AudioProcessor.from_pretrained(str(p), local_files_only=True)
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


def emotion_token_ids(lens, emotions: Sequence[str] = DEMO_EMOTIONS) -> list[int]:
    tok = lens.tokenizer
    ids = [tok.convert_tokens_to_ids(e) for e in emotions]
    if any(i is None or i == tok.unk_token_id for i in ids):
        raise InputError(f"emotion words {list(emotions)} are not single tokens of this tokenizer")
    return ids


# ------------------------------------------------------------------------------------------ evaluation
def load_audio(clips: Sequence[EmotionClip], rate: int = 16000) -> list[np.ndarray]:
    return [c.load(rate)[0] for c in clips]


def predict(lens, clips: Sequence[EmotionClip], conditions: dict[str, list] | None = None, *,
            emotions: Sequence[str] = DEMO_EMOTIONS, batch_size: int = 32,
            audio: Sequence[np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Constrained-scoring predictions (argmax over the emotion words' logits at the last position).

    ``conditions``: name -> list of edits; the un-edited model is always run as ``"base"``. The audio
    encoder runs once per batch and is reused for every condition. Returns name -> (clip,) predicted indices.
    """
    conditions = dict(conditions or {})
    ids = emotion_token_ids(lens, emotions)
    audio = list(audio) if audio is not None else load_audio(clips, lens.sampling_rate)
    out: dict[str, list] = {"base": [], **{k: [] for k in conditions}}
    for s in range(0, len(clips), batch_size):
        chunk = clips[s:s + batch_size]
        b = lens.batch(audio[s:s + len(chunk)], [demo_prompt(c.utterance_id, emotions) for c in chunk],
                       sampling_rate=lens.sampling_rate)
        o = lens.trace(b, keep_audio=bool(conditions))
        out["base"].append(o.logits[:, ids].argmax(1).numpy())
        for name, edits in conditions.items():
            oc = lens.trace(b, edits=edits, audio_cache=o.audio)
            out[name].append(oc.logits[:, ids].argmax(1).numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def per_class_accuracy(pred: np.ndarray, clips: Sequence[EmotionClip], emotions: Sequence[str] = DEMO_EMOTIONS
                       ) -> dict[str, float]:
    y = np.array([list(emotions).index(c.emotion) for c in clips])
    return {e: float((pred[y == i] == i).mean()) if (y == i).any() else float("nan") for i, e in enumerate(emotions)}


def constrained_accuracy(lens, clips: Sequence[EmotionClip], emotions: Sequence[str] = DEMO_EMOTIONS, **kw
                         ) -> dict[str, float]:
    """Per-class accuracy of the un-edited model under constrained scoring."""
    return per_class_accuracy(predict(lens, clips, emotions=emotions, **kw)["base"], clips, emotions)


def identification_stats(lens, clips: Sequence[EmotionClip], *, emotions: Sequence[str] = DEMO_EMOTIONS,
                         per_emotion: int | None = None, batch_size: int = 32, site: str = "act",
                         positions: str = "valid", audio: Sequence[np.ndarray] | None = None):
    """NeuronStats over the clips the un-edited model answers correctly, balanced per emotion.

    Returns ``(stats, pool)``: the pool has ``min(per_emotion, fewest correct)`` clips of each emotion.
    """
    audio = list(audio) if audio is not None else load_audio(clips, lens.sampling_rate)
    pred = predict(lens, clips, emotions=emotions, batch_size=batch_size, audio=audio)["base"]
    y = np.array([list(emotions).index(c.emotion) for c in clips])
    correct = [np.flatnonzero((y == i) & (pred == i)) for i in range(len(emotions))]
    k = min(len(c) for c in correct)
    if per_emotion is not None:
        k = min(k, per_emotion)
    if k == 0:
        raise InputError("identification: some emotion has no correctly answered clip")
    keep = np.sort(np.concatenate([c[:k] for c in correct]))
    stats = lens.new_stats(emotions, site, positions)
    for s in range(0, len(keep), batch_size):
        idx = keep[s:s + batch_size]
        chunk = [clips[i] for i in idx]
        b = lens.batch([audio[i] for i in idx], [demo_prompt(c.utterance_id, emotions) for c in chunk],
                       sampling_rate=lens.sampling_rate)
        lens.trace(b, stats=stats, emotion_index=stats.emotion_index([c.emotion for c in chunk]), logits="none")
    return stats, [clips[i] for i in keep]


def deactivation_effects(lens, clips: Sequence[EmotionClip], neuron_sets: dict[str, Any], *,
                         emotions: Sequence[str] = DEMO_EMOTIONS, batch_size: int = 32,
                         audio: Sequence[np.ndarray] | None = None) -> dict[str, Any]:
    """Deactivate each emotion's units of each NeuronSet on ``clips``; the paper's metrics.

    Returns ``{"base": per-class acc, selector: {"delta": (mask, eval) accuracy change in points,
    "SE": mean self effect, "ACE": mean cross effect, "ESS": SE - ACE, "se_per": {...}}}``.
    """
    from .interventions import deactivate

    conds = {f"{name}:{e}": [deactivate(ns[e])] for name, ns in neuron_sets.items() for e in emotions}
    preds = predict(lens, clips, conds, emotions=emotions, batch_size=batch_size, audio=audio)
    base = per_class_accuracy(preds["base"], clips, emotions)
    res: dict[str, Any] = {"base": base}
    E = len(emotions)
    for name in neuron_sets:
        d = np.zeros((E, E))
        for i, m in enumerate(emotions):
            acc = per_class_accuracy(preds[f"{name}:{m}"], clips, emotions)
            d[i] = [100 * (acc[e] - base[e]) for e in emotions]
        se = np.diag(d)
        cross = np.array([(d[:, j].sum() - d[j, j]) / (E - 1) for j in range(E)])  # other masks' effect on e
        res[name] = {"delta": d.round(2).tolist(), "SE": float(se.mean()), "ACE": float(cross.mean()),
                     "ESS": float(se.mean() - cross.mean()),
                     "se_per": dict(zip(emotions, se.round(2).tolist()))}
    return res


def steering_shares(lens, clips: Sequence[EmotionClip], neuron_set, alphas: Sequence[float] = (0, 0.5, 1, 2, 4), *,
                    emotions: Sequence[str] = DEMO_EMOTIONS, batch_size: int = 32,
                    audio: Sequence[np.ndarray] | None = None) -> dict[str, list[float]]:
    """For each emotion, the share of all clips predicted as that emotion when its units get gain 1 + alpha."""
    from .interventions import steer

    conds = {f"{e}:{a}": [steer(neuron_set[e], alpha=float(a))] for e in emotions for a in alphas if a != 0}
    preds = predict(lens, clips, conds, emotions=emotions, batch_size=batch_size, audio=audio)
    out = {}
    for i, e in enumerate(emotions):
        out[e] = [float((preds["base" if a == 0 else f"{e}:{a}"] == i).mean()) for a in alphas]
    return out
