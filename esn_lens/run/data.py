"""The run's clips (demo splits or a corpus split speaker-disjointly, bad clips screened) and its model."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from ..data.clip import EmotionClip, audio_hash
from ..errors import ESNLensError, IncompatibleError, InputError
from .config import RunConfig, check_model_arg


@dataclass
class ClipSplit:
    """Identification and evaluation clips of one run, with the emotions they are scored on."""

    identification: list[EmotionClip]
    evaluation: list[EmotionClip]
    emotions: tuple[str, ...]
    source: dict[str, Any] = field(default_factory=dict)


def counts(clips: Sequence[EmotionClip], emotions: Sequence[str]) -> dict[str, int]:
    return {e: sum(c.emotion == e for c in clips) for e in emotions}


def load_clips(cfg: RunConfig) -> ClipSplit:
    """The run's clips: the demo's shipped splits, or a registered corpus split speaker-disjointly."""
    if cfg.dataset == "demo":
        from ..demo_model import DEMO_EMOTIONS, demo_clips

        # identification: the training speakers' clips; evaluation: held-out ("unseen") speakers
        ident, evaluation = list(demo_clips("identification")), list(demo_clips("unseen"))
        emotions = DEMO_EMOTIONS  # the demo's fixed label order (it fixes the prompts' option order)
        if cfg.ident_per_emotion is not None:
            ident = _cap(ident, emotions, cfg.ident_per_emotion, cfg.seed)
        if cfg.eval_per_emotion is not None:
            evaluation = _cap(evaluation, emotions, cfg.eval_per_emotion, cfg.seed)
        src = {"dataset": "demo"}
    else:
        from ..data.loaders import load_dataset
        from ..data.splits import split_identification_evaluation

        ds = load_dataset(cfg.dataset, cfg.data_dir, label_set=cfg.label_set)
        emotions = ds.emotions
        if cfg.label_set is None:  # no label set chosen: only known emotions (not "bored", "3") become options
            from ..data.labels import CANONICAL_EMOTIONS, LABEL_SETS

            odd = [e for e in emotions if e not in CANONICAL_EMOTIONS]
            if odd:
                raise InputError(f"{cfg.dataset} at {cfg.data_dir}: labels {odd} are not known emotions "
                                 f"({', '.join(CANONICAL_EMOTIONS)}); choose a label set with --label-set "
                                 f"({', '.join(LABEL_SETS.names())}) or pass --label-set all to keep every label")
        if cfg.discover:
            ident, evaluation = split_identification_evaluation(
                ds, eval_fraction=cfg.eval_fraction, eval_per_emotion=cfg.eval_per_emotion,
                identification_per_emotion=cfg.ident_per_emotion, seed=cfg.seed, unknown_speakers="drop")
            if cfg.eval_split == "all":
                raise InputError("eval_split='all' only applies to validation without discovery")
        elif cfg.eval_split == "eval":
            ident, evaluation = split_identification_evaluation(
                ds, eval_fraction=cfg.eval_fraction, eval_per_emotion=cfg.eval_per_emotion, seed=cfg.seed,
                unknown_speakers="drop")
            ident = ident[:0]
        else:
            ident, evaluation = ds[:0], (ds.cap_per_emotion(cfg.eval_per_emotion, seed=cfg.seed)
                                         if cfg.eval_per_emotion is not None else ds)
        ident, evaluation = list(ident), list(evaluation)
        src = {"dataset": cfg.dataset, "data_dir": str(cfg.data_dir), "label_set": ds.manifest.label_set,
               "manifest": ds.manifest.summary() if hasattr(ds.manifest, "summary") else ""}
        from ..data.dataset import DROP_REASONS

        man = ds.manifest
        bad = [{"id": item, "reason": man.details.get(item) or DROP_REASONS[r]} for r in BAD_FILE_REASONS
               for item in man.dropped.get(r, [])]
        if bad:
            src["bad_files"] = bad
        _data_warnings(src, man, cfg, ds)
    return restrict_emotions(ClipSplit(ident, evaluation, tuple(emotions), src), cfg)


#: the rate clips are decoded at when screened (before the model, and its rate, are known)
SCREEN_RATE = 16000

#: manifest drop reasons that are bad clips (a file listed but absent or unreadable), not label choices
BAD_FILE_REASONS = ("missing_file", "not_a_file", "unreadable")


def _data_warnings(src: dict[str, Any], man: Any, cfg: RunConfig, ds: Any) -> None:
    """Say (stderr, clips.json, results.json, report) what the corpus does that would otherwise pass unnoticed:
    repeated utterance ids (refused with ``on_duplicate="fail"``), speaker ids merged across spellings, clips read
    from outside the data folder, and label-set emotions that have no clips at all."""
    from .notices import warn

    dup = man.dropped.get("duplicate", [])
    if dup:
        ids = sorted(set(dup))
        what = (f"{len(dup)} row(s) repeat an utterance id already listed ({', '.join(ids[:5])}"
                f"{' ...' if len(ids) > 5 else ''})")
        if cfg.on_duplicate == "fail":
            raise InputError(f"{cfg.dataset} at {cfg.data_dir}: {what}; give every row its own utterance_id "
                             "(--on-duplicate warn keeps the first row of each)")
        warn(src, f"{what}: the first row of each is used, the others are left out (--on-duplicate fail refuses)")
        src["duplicates"] = ids
    if man.merged_speakers:
        pairs = [f"{k!r} -> {v!r}" for k, v in list(man.merged_speakers.items())[:5]]
        warn(src, f"speaker ids that differ only by case or spaces are one speaker: {', '.join(pairs)}"
             f"{' ...' if len(man.merged_speakers) > 5 else ''}")
        src["merged_speakers"] = dict(man.merged_speakers)
    if man.outside_root:
        src["outside_data_dir"] = list(man.outside_root)
        warn(src, f"{len(man.outside_root)} clip(s) are read from outside the data folder {cfg.data_dir} "
             f"({', '.join(man.outside_root[:5])}{' ...' if len(man.outside_root) > 5 else ''}; listed in clips.json)")
    empty = [e for e, n in ds.counts().items() if n == 0]
    if empty:
        warn(src, f"label set {cfg.label_set or man.label_set}: no clips of {empty} in the corpus; the run uses "
             f"{[e for e in ds.emotions if e not in empty]}")


def screen_clips(split: ClipSplit, cfg: RunConfig) -> ClipSplit:
    """Decode every clip of the run now (before any model loads) and set aside those that fail.

    A clip fails when its file is missing or unreadable, or its audio is empty, NaN/inf or mis-scaled;
    multi-channel and other-rate audio is fine (downmixed and resampled when read). ``cfg.on_bad_clip``:
    ``"skip"`` runs without them and records each with its reason in ``split.source["skipped"]`` (clips.json,
    results.json, the report); ``"fail"`` refuses the run naming them.
    """
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    from ..prefetch import check_workers

    def problem(c: EmotionClip) -> str | None:
        try:  # streamed and capped: a 10-hour or 192 kHz file costs what its first minutes do
            c.content_hash = audio_hash(c.load(SCREEN_RATE)[0])
        except InputError as e:
            reason, prefix = str(e), f"clip {c.utterance_id}: "
            return reason[len(prefix):] if reason.startswith(prefix) else reason
        return None

    skipped = list(split.source.get("bad_files", []))
    keep: dict[str, list[EmotionClip]] = {"identification": [], "evaluation": []}
    everything = [(side, c) for side in keep for c in getattr(split, side)]
    with ThreadPoolExecutor(max(1, check_workers(cfg.workers))) as pool, \
            tqdm(total=len(everything), desc="check clips", unit="clip", disable=not cfg.progress) as bar:
        for (side, c), why in zip(everything, pool.map(problem, [c for _, c in everything])):  # in order
            bar.update(1)
            if why is None:
                keep[side].append(c)
            else:
                skipped.append({"id": c.utterance_id, "reason": why})
    if not skipped:
        return _overlap(split, cfg)
    if cfg.on_bad_clip == "fail":
        first = "; ".join(f"{s['id']}: {s['reason']}" for s in skipped[:3])
        more = f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        raise InputError(f"{len(skipped)} bad clip(s) in {split.source.get('dataset')}: {first}{more} "
                         "(--on-bad-clip skip runs without them)")
    source = {k: v for k, v in split.source.items() if k != "bad_files"}
    source["skipped"] = skipped
    return _overlap(restrict_emotions(ClipSplit(keep["identification"], keep["evaluation"], split.emotions, source),
                                      cfg), cfg)


def _overlap(split: ClipSplit, cfg: RunConfig) -> ClipSplit:
    if cfg.validate and cfg.neurons:
        from .sets import check_pool_overlap

        check_pool_overlap(split, cfg.neurons)
    return split


def _cap(clips: list[EmotionClip], emotions: Sequence[str], n: int, seed: int) -> list[EmotionClip]:
    rng = np.random.default_rng(seed)
    keep: set[int] = set()
    for e in emotions:
        idx = [i for i, c in enumerate(clips) if c.emotion == e]
        if len(idx) > n:
            idx = [idx[j] for j in sorted(rng.permutation(len(idx))[:n])]
        keep.update(idx)
    return [c for i, c in enumerate(clips) if i in keep]


def restrict_emotions(split: ClipSplit, cfg: RunConfig) -> ClipSplit:
    """Keep the emotions that have clips wherever the run needs them (at least two)."""
    need_ident, need_eval = cfg.discover, cfg.validate
    keep = [e for e in split.emotions
            if (not need_ident or any(c.emotion == e for c in split.identification))
            and (not need_eval or any(c.emotion == e for c in split.evaluation))]
    dropped = [e for e in split.emotions if e not in keep]
    if dropped and len(keep) >= 2:
        from .notices import warn

        sides = " and ".join(s for s, need in (("identification", need_ident), ("evaluation", need_eval)) if need)
        warn(split.source, f"emotion(s) {dropped} have no clips on the {sides} side; the run uses {keep}")
    if len(keep) < 2:
        raise InputError(f"{split.source.get('dataset')}: fewer than 2 emotions have clips on both sides of the "
                         f"identification/evaluation split (emotions {list(split.emotions)}); use more clips or speakers")
    if dropped:
        split.source["dropped_emotions"] = dropped
    ks = set(keep)
    return ClipSplit([c for c in split.identification if c.emotion in ks],
                     [c for c in split.evaluation if c.emotion in ks], tuple(keep), split.source)


def load_lens(cfg: RunConfig, device: str | None = None):
    """The run's :class:`~esn_lens.lens.Lens`: the shipped demo model, or a local folder / hub id, on ``device``
    (default ``cfg.device``)."""
    device = cfg.device if device is None else device
    from ..lens import Lens

    if not cfg.progress:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    if cfg.model in ("demo", "real_demo", "real_model"):
        from ..loading import parse_dtype

        if cfg.model == "demo":
            from ..demo_model import load_demo_model

            model, processor = load_demo_model()
        elif cfg.model == "real_model":  # Whisper tiny.en + SmolLM2-135M + the shipped projector
            from ..real_model import load_real_model

            model, processor = load_real_model()
        else:  # SmolLM2-135M frozen + the shipped audio side; MissingExtraError (one line) without the extra
            from ..real_demo import load_real_demo_model

            model, processor = load_real_demo_model()
        dtype = parse_dtype(cfg.dtype)  # --dtype is honoured for the demo too ("auto": as saved)
        if isinstance(dtype, torch.dtype):
            model = model.to(dtype)
        if device is not None:
            model = model.to(device)
        return Lens(model, processor)
    m = check_model_arg(cfg.model)
    try:
        return Lens.from_pretrained(m, dtype=cfg.dtype, device=device, device_map=cfg.device_map,
                                    trust_remote_code=bool(cfg.trust_remote_code))
    except ESNLensError:
        raise
    except Exception as e:  # transformers/hub raise many types; name the model and the cause in one line
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"cannot load model {cfg.model!r}: {msg}") from None


def weights_digest(model: torch.nn.Module, samples: int = 64) -> str:
    """A cheap digest of a model's weights: names, shapes, dtypes and ``samples`` strided values per tensor.

    Tells two checkpoints of one architecture apart (the architecture fingerprint cannot) without reading
    every weight; works for models spread over devices (values of meta/offloaded tensors are skipped).
    """
    h = hashlib.sha256()
    with torch.no_grad():
        for name, p in model.named_parameters():
            h.update(f"{name}:{tuple(p.shape)}:{p.dtype}".encode())
            if p.device.type == "meta" or p.numel() == 0:
                continue
            flat = p.detach().reshape(-1)
            k = min(samples, flat.numel())  # evenly spaced, in integers (a float linspace overflows large tensors)
            idx = torch.arange(k, device=flat.device) * (flat.numel() - 1) // max(k - 1, 1)
            h.update(flat[idx].float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


__all__ = ["ClipSplit", "counts", "load_clips", "screen_clips", "restrict_emotions", "load_lens", "weights_digest",
           "BAD_FILE_REASONS"]


def resume_clips(split: ClipSplit, prev: dict, ids: dict, run_dir: Any, log: Any) -> ClipSplit:
    """On resume after the corpus changed (e.g. a fixed manifest): continue with the clips the run started with when
    every one of them is still there, saying what changed; refuse when some are gone or the emotions differ."""
    if prev["emotions"] != list(split.emotions):
        raise IncompatibleError(f"the corpus's emotions {list(split.emotions)} differ from those {run_dir} was "
                                f"started with {prev['emotions']}; choose another --out")
    by_id = {c.utterance_id: c for c in (*split.identification, *split.evaluation)}
    gone = [i for side in ("identification", "evaluation") for i in prev["ids"][side] if i not in by_id]
    if gone:
        raise IncompatibleError(f"{len(gone)} clip(s) {run_dir} was started with are gone or unreadable now "
                                f"({', '.join(gone[:5])}{' ...' if len(gone) > 5 else ''}); the finished stages used "
                                "them, so the run cannot continue: choose another --out")
    kept = {side: [by_id[i] for i in prev["ids"][side]] for side in ("identification", "evaluation")}
    new = sorted(set(by_id) - {i for side in kept.values() for i in [c.utterance_id for c in side]})
    moved = [i for side in ("identification", "evaluation") for i in prev["ids"][side] if i not in ids[side]]
    log(f"[data] the corpus changed since this run started: {len(new)} clip(s) new ({', '.join(new[:5])}"
            f"{' ...' if len(new) > 5 else ''}), {len(moved)} in another split; continuing with the "
            f"{sum(len(v) for v in kept.values())} clips the run started with (start a new --out to use the new ones)")
    return ClipSplit(kept["identification"], kept["evaluation"], split.emotions, dict(split.source))
