"""discover -> validate -> analyse as one resumable run with a run folder.

A run reads labelled clips, keeps those the un-edited model answers correctly (the identification pool),
accumulates :class:`~esn_lens.stats.NeuronStats` over them, selects neurons with every requested
selector, deactivates and steers each selection on held-out clips, and analyses the result::

    from esn_lens.pipeline import RunConfig, run_pipeline
    cfg = RunConfig(model="Qwen/Qwen2.5-Omni-7B", dataset="iemocap", data_dir="/data/IEMOCAP", dtype="bfloat16")
    results = run_pipeline(cfg, "runs/omni_iemocap")          # run_pipeline(..., resume=True) continues a run

The run folder::

    config.json              the configuration (what the run computes) and the runtime options
    progress.json            completed stages with their seconds; the run's identity (config + model)
    clips.json               the identification / evaluation clip ids and counts
    pool.json                the identification pool (clips answered correctly, balanced per emotion)
    stats.safetensors        NeuronStats over the pool
    neurons/<name>.safetensors   one NeuronSet per selector (and per transferred set)
    eval/<stage>.json        per-condition predictions of each evaluation stage
    checkpoints/             partial stats / predictions of an interrupted stage (removed when it completes)
    results.json             metrics, layer analysis, clip counts, timing
    figures/*.png, report.md, report.html

Every file is written atomically; a stage is marked done in ``progress.json`` only after its output is
complete. Stats collection and every evaluation stage checkpoint every ``checkpoint_every`` batches at
batch boundaries, so a killed run resumes from the last checkpoint and gives results identical to an
uninterrupted run. A run folder (or checkpoint) made with another model or configuration is refused.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .data.clip import EmotionClip
from .errors import CorruptFileError, ESNLensError, IncompatibleError, InputError
from .evaluate import balanced_pool, se_ace_ess
from .io import atomic_write_json, load_tensors, save_tensors

#: The paper's selectors, run by default (``mean_diff``/``cohens_d`` and user selectors on request).
PAPER_SELECTORS = ("lap", "lape", "mad", "conact", "random")
#: Stages in order; which of them a run executes depends on ``RunConfig.discover`` / ``.validate``.
STAGES = ("data", "pool", "stats", "neurons", "deactivation", "steering", "analysis", "report")
RESULTS_VERSION = 1
STATS_CHECKPOINT_KIND = "stats_checkpoint"
#: Testing aid: seconds to sleep after each checkpoint is written (lets a test kill a run mid-stage).
CHECKPOINT_PAUSE_ENV = "ESN_LENS_CHECKPOINT_PAUSE"


#: lock file of a run folder in use (holds the pid of the process running it)
LOCK_NAME = ".esn_lens.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunError(InputError):
    """A run folder cannot be started or resumed as asked (exists, differs, incomplete)."""


# ---------------------------------------------------------------------------------------------- config
@dataclass
class RunConfig:
    """What a run computes (identity fields) and how it runs (runtime fields, free to change on resume).

    Identity: model, data, selectors, budget, alphas, SER protocol, seeds, bootstrap. Runtime: dtype,
    device, device_map, checkpoint_every, progress, threads. ``model="demo"`` / ``dataset="demo"`` use the
    shipped demo model and clips. ``neurons``: NeuronSet files (or folders of them) found elsewhere, e.g.
    on another corpus, validated next to (or, with ``discover=False``, instead of) the discovered sets.
    """

    model: str = "demo"
    dataset: str = "demo"
    data_dir: str | None = None
    label_set: str | None = None
    selectors: tuple[str, ...] = PAPER_SELECTORS
    top_frac: float = 0.005
    alphas: tuple[float, ...] = (0.5, 1.0, 2.0)
    site: str = "act"
    positions: str = "valid"
    mode: str = "generate"
    answer: str = "digit"
    max_new_tokens: int = 20
    batch_size: int = 8
    seed: int = 0
    eval_fraction: float = 0.5
    eval_per_emotion: int | None = 200
    ident_per_emotion: int | None = None
    pool_cap: int | None = None
    eval_split: str = "eval"
    discover: bool = True
    validate: bool = True
    neurons: tuple[str, ...] = ()
    bootstrap: int = 1000
    #: the registered intervention of the deactivation stage (heatmap / SE / ACE / ESS); "deactivate" = gain 0
    intervention: str = "deactivate"
    # runtime
    dtype: str | None = None
    device: str | None = None
    device_map: str | None = None
    checkpoint_every: int = 4
    progress: bool = True
    threads: int | None = None
    #: threads building the next batches while the model runs (None: a default for the machine, 0: serial)
    workers: int | None = None
    trust_remote_code: bool = False
    on_bad_clip: str = "skip"

    RUNTIME = ("dtype", "device", "device_map", "checkpoint_every", "progress", "threads", "workers", "trust_remote_code",
               "on_bad_clip")

    def __post_init__(self) -> None:
        self.selectors = tuple(self.selectors)
        self.alphas = tuple(float(a) for a in self.alphas)
        self.neurons = tuple(str(p) for p in self.neurons)

    def check(self, *, clips_given: bool = False, lens_given: bool = False) -> "RunConfig":
        """Refuse bad values with one clear message each (before any model is loaded).

        ``clips_given`` / ``lens_given``: the clips / model come from the caller, so ``dataset`` / ``model``
        are only labels and are not looked up.
        """
        from .adapters.base import check_site
        from .selectors import SELECTORS

        if not self.discover and not self.validate:
            raise InputError("a run must discover, validate, or both")
        unknown = [s for s in self.selectors if s not in SELECTORS]
        if unknown:
            raise InputError(f"unknown selector(s) {unknown}; registered: {', '.join(SELECTORS.names())}")
        if "atp" in self.selectors:
            raise InputError("selector 'atp' ranks units by attribution patching, which esn-lens run does not collect; "
                             "use esn_lens.collect_attribution + find_neurons(att, 'atp') in Python (tutorial 06)")
        if len(set(self.selectors)) != len(self.selectors):
            raise InputError(f"selectors repeat: {list(self.selectors)}")
        if self.discover and not self.selectors:
            raise InputError("discovery needs at least one selector")
        if not self.discover and not self.neurons:
            raise InputError("validation without discovery needs neuron files (--neurons FILE)")
        if not (isinstance(self.top_frac, (int, float)) and 0 < float(self.top_frac) <= 1):
            raise InputError(f"top fraction must be in (0, 1] (0.005 = top 0.5%), got {self.top_frac}")
        if any(not math.isfinite(a) for a in self.alphas):
            raise InputError(f"alphas must be finite numbers, got {list(self.alphas)}")
        if len(set(self.alphas)) != len(self.alphas):
            raise InputError(f"alphas repeat: {list(self.alphas)}")
        check_site(self.site)
        from .loading import parse_dtype

        parse_dtype(self.dtype)  # an unknown --dtype is refused before any model loads
        if self.positions not in ("valid", "audio", "no_prompt", "last"):
            raise InputError(f"unknown positions {self.positions!r}; expected valid, audio, no_prompt or last")
        if self.mode not in ("generate", "constrained"):
            raise InputError(f"mode must be 'generate' or 'constrained', got {self.mode!r}")
        if self.answer not in ("digit", "word"):
            raise InputError(f"answer must be 'digit' or 'word', got {self.answer!r}")
        from .interventions import INTERVENTIONS

        if self.intervention not in INTERVENTIONS:
            raise InputError(f"unknown intervention {self.intervention!r}; registered: {', '.join(INTERVENTIONS.names())} "
                             "(register your own with @INTERVENTIONS.register in a --plugin module)")
        if self.intervention == "mean_ablate" and not self.discover:
            raise InputError("intervention 'mean_ablate' needs the run's own statistics (discover), not --neurons alone")
        if self.on_bad_clip not in ("skip", "fail"):
            raise InputError(f"on_bad_clip must be 'skip' or 'fail', got {self.on_bad_clip!r}")
        if self.eval_split not in ("eval", "all"):
            raise InputError(f"eval_split must be 'eval' or 'all', got {self.eval_split!r}")
        for name in ("batch_size", "checkpoint_every", "max_new_tokens"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.bootstrap < 0:
            raise InputError(f"bootstrap must be >= 0, got {self.bootstrap}")
        if not 0 < self.eval_fraction < 1:
            raise InputError(f"eval_fraction must be in (0, 1), got {self.eval_fraction}")
        if self.dataset != "demo" and not clips_given:
            from .data.loaders import DATASETS

            DATASETS.get(self.dataset)  # KeyError listing the loaders
            if self.data_dir is None:
                raise InputError(f"dataset {self.dataset!r} needs a data folder (--data-dir PATH)")
            if not Path(self.data_dir).expanduser().exists():
                raise InputError(f"data folder {self.data_dir} does not exist")
        if self.label_set is not None and not clips_given:
            from .data.labels import get_label_set

            get_label_set(self.label_set)  # InputError listing the registered label sets
        if self.model != "demo" and not lens_given:
            check_model_arg(self.model)
        for p in self.neurons:
            if not Path(p).exists():
                raise InputError(f"neuron file {p} does not exist")
        return self

    def identity(self) -> dict[str, Any]:
        """The fields that determine the results (compared when a run is resumed)."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in self.RUNTIME}
        d["selectors"], d["alphas"] = list(self.selectors), list(self.alphas)
        d["model"] = normalise_model(self.model)  # ./m, m and /abs/m name one model
        if d["intervention"] == "deactivate":  # the default is left out: run folders of earlier versions still resume
            del d["intervention"]
        d["neurons"] = [str(Path(p).expanduser().resolve()) for p in self.neurons]
        if d["data_dir"] is not None:
            d["data_dir"] = str(Path(d["data_dir"]).expanduser().resolve())
        return d

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["selectors"], d["alphas"], d["neurons"] = list(self.selectors), list(self.alphas), list(self.neurons)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


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
            idx = torch.linspace(0, flat.numel() - 1, min(samples, flat.numel()), device=flat.device).long()
            h.update(flat[idx].float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------- data
@dataclass
class ClipSplit:
    """Identification and evaluation clips of one run, with the emotions they are scored on."""

    identification: list[EmotionClip]
    evaluation: list[EmotionClip]
    emotions: tuple[str, ...]
    source: dict[str, Any] = field(default_factory=dict)


def _counts(clips: Sequence[EmotionClip], emotions: Sequence[str]) -> dict[str, int]:
    return {e: sum(c.emotion == e for c in clips) for e in emotions}


def load_clips(cfg: RunConfig) -> ClipSplit:
    """The run's clips: the demo's shipped splits, or a registered corpus split speaker-disjointly."""
    if cfg.dataset == "demo":
        from .demo_model import DEMO_EMOTIONS, demo_clips

        # identification: the training speakers' clips; evaluation: held-out ("unseen") speakers
        ident, evaluation = list(demo_clips("identification")), list(demo_clips("unseen"))
        emotions = DEMO_EMOTIONS  # the demo's fixed label order (it fixes the prompts' option order)
        if cfg.ident_per_emotion is not None:
            ident = _cap(ident, emotions, cfg.ident_per_emotion, cfg.seed)
        if cfg.eval_per_emotion is not None:
            evaluation = _cap(evaluation, emotions, cfg.eval_per_emotion, cfg.seed)
        src = {"dataset": "demo"}
    else:
        from .data.loaders import load_dataset
        from .data.splits import split_identification_evaluation

        ds = load_dataset(cfg.dataset, cfg.data_dir, label_set=cfg.label_set)
        emotions = ds.emotions
        if cfg.label_set is None:  # no label set chosen: only known emotions (not "bored", "3") become options
            from .data.labels import CANONICAL_EMOTIONS, LABEL_SETS

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
        from .data.dataset import DROP_REASONS

        bad = [{"id": item, "reason": DROP_REASONS[r]} for r in BAD_FILE_REASONS
               for item in ds.manifest.dropped.get(r, [])]
        if bad:
            src["bad_files"] = bad
    return _restrict_emotions(ClipSplit(ident, evaluation, tuple(emotions), src), cfg)


#: manifest drop reasons that are bad clips (a file listed but absent or unreadable), not label choices
BAD_FILE_REASONS = ("missing_file", "unreadable")


def screen_clips(split: ClipSplit, cfg: RunConfig) -> ClipSplit:
    """Decode every clip of the run now (before any model loads) and set aside those that fail.

    A clip fails when its file is missing or unreadable, or its audio is empty, NaN/inf or mis-scaled;
    multi-channel and other-rate audio is fine (downmixed and resampled when read). ``cfg.on_bad_clip``:
    ``"skip"`` runs without them and records each with its reason in ``split.source["skipped"]`` (clips.json,
    results.json, the report); ``"fail"`` refuses the run naming them.
    """
    skipped = list(split.source.get("bad_files", []))
    keep: dict[str, list[EmotionClip]] = {"identification": [], "evaluation": []}
    for side in keep:
        for c in getattr(split, side):
            try:
                c.load()
            except InputError as e:
                reason = str(e)
                prefix = f"clip {c.utterance_id}: "
                skipped.append({"id": c.utterance_id, "reason": reason[len(prefix):] if reason.startswith(prefix) else reason})
            else:
                keep[side].append(c)
    if not skipped:
        return split
    if cfg.on_bad_clip == "fail":
        first = "; ".join(f"{s['id']}: {s['reason']}" for s in skipped[:3])
        more = f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        raise InputError(f"{len(skipped)} bad clip(s) in {split.source.get('dataset')}: {first}{more} "
                         "(--on-bad-clip skip runs without them)")
    source = {k: v for k, v in split.source.items() if k != "bad_files"}
    source["skipped"] = skipped
    return _restrict_emotions(ClipSplit(keep["identification"], keep["evaluation"], split.emotions, source), cfg)


def _cap(clips: list[EmotionClip], emotions: Sequence[str], n: int, seed: int) -> list[EmotionClip]:
    rng = np.random.default_rng(seed)
    keep: set[int] = set()
    for e in emotions:
        idx = [i for i, c in enumerate(clips) if c.emotion == e]
        if len(idx) > n:
            idx = [idx[j] for j in sorted(rng.permutation(len(idx))[:n])]
        keep.update(idx)
    return [c for i, c in enumerate(clips) if i in keep]


def _restrict_emotions(split: ClipSplit, cfg: RunConfig) -> ClipSplit:
    """Keep the emotions that have clips wherever the run needs them (at least two)."""
    need_ident, need_eval = cfg.discover, cfg.validate
    keep = [e for e in split.emotions
            if (not need_ident or any(c.emotion == e for c in split.identification))
            and (not need_eval or any(c.emotion == e for c in split.evaluation))]
    dropped = [e for e in split.emotions if e not in keep]
    if len(keep) < 2:
        raise InputError(f"{split.source.get('dataset')}: fewer than 2 emotions have clips on both sides of the "
                         f"identification/evaluation split (emotions {list(split.emotions)}); use more clips or speakers")
    if dropped:
        split.source["dropped_emotions"] = dropped
    ks = set(keep)
    return ClipSplit([c for c in split.identification if c.emotion in ks],
                     [c for c in split.evaluation if c.emotion in ks], tuple(keep), split.source)


def _looks_local(m: str) -> bool:
    return m.startswith((os.sep, ".", "~")) or os.path.exists(os.path.expanduser(m)) or m.count("/") > 1


def normalise_model(model: str) -> str:
    """The run identity's model name: an existing local folder as its absolute resolved path; a hub id or
    ``"demo"`` unchanged. Example: ``normalise_model("./m") == normalise_model(os.path.abspath("m"))``."""
    if model != "demo" and _looks_local(model) and Path(model).expanduser().is_dir():
        return str(Path(model).expanduser().resolve())
    return model


def check_model_arg(model: str) -> str:
    """A local model folder (checked: exists, has config.json) as an absolute path, or a hub id unchanged."""
    m = model
    if _looks_local(m):
        path = Path(m).expanduser().resolve()
        if not path.is_dir():
            raise InputError(f"model folder {m} does not exist")
        if not (path / "config.json").is_file():
            raise InputError(f"model folder {m} has no config.json (expected a transformers save_pretrained folder)")
        return str(path)
    return m


def load_lens(cfg: RunConfig):
    """The run's :class:`~esn_lens.lens.Lens`: the shipped demo model, or a local folder / hub id."""
    from .lens import Lens

    if not cfg.progress:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    if cfg.model == "demo":
        from .demo_model import load_demo_model

        from .loading import parse_dtype

        model, processor = load_demo_model()
        dtype = parse_dtype(cfg.dtype)  # --dtype is honoured for the demo too ("auto": as saved)
        if isinstance(dtype, torch.dtype):
            model = model.to(dtype)
        if cfg.device is not None:
            model = model.to(cfg.device)
        return Lens(model, processor)
    m = check_model_arg(cfg.model)
    try:
        return Lens.from_pretrained(m, dtype=cfg.dtype, device=cfg.device, device_map=cfg.device_map,
                                    trust_remote_code=bool(cfg.trust_remote_code))
    except ESNLensError:
        raise
    except Exception as e:  # transformers/hub raise many types; name the model and the cause in one line
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"cannot load model {cfg.model!r}: {msg}") from None


# ---------------------------------------------------------------------------------------------- the run
class _RunFileDict(dict):
    """A JSON object read from a run file: a missing key is a :class:`CorruptFileError` naming file and key."""

    path: str = ""

    def __missing__(self, key: Any) -> Any:
        raise CorruptFileError(f"{self.path}: damaged run file (no key {key!r}); the file was edited or cut short "
                               "-- choose another --out or remove the folder")


def read_run_json(path: str | Path) -> dict[str, Any]:
    """A JSON object of a run folder; damage (not JSON, not an object, later a missing key) is a one-line
    :class:`CorruptFileError` naming the file (e.g. ``clips.json`` holding ``[]``)."""
    path = Path(path)

    def hook(pairs):
        d = _RunFileDict(pairs)
        d.path = str(path)
        return d

    try:
        with open(path) as f:
            obj = json.load(f, object_pairs_hook=hook)
    except json.JSONDecodeError as e:
        raise CorruptFileError(f"{path}: damaged run file (not JSON: {e}); choose another --out or remove the folder") from None
    except UnicodeDecodeError as e:
        raise CorruptFileError(f"{path}: damaged run file (not text: {e}); choose another --out or remove the folder") from None
    if not isinstance(obj, dict):
        raise CorruptFileError(f"{path}: damaged run file (expected a JSON object, found {type(obj).__name__} "
                               f"{json.dumps(obj)[:40]}); choose another --out or remove the folder")
    return obj


def _log_default(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.@+-]", "_", name)


class Run:
    """One run folder: executes the stages not yet done, in order, and returns the results dict.

    ``lens`` / ``clips`` may be given directly (Python API, tutorials, tests); otherwise they are loaded
    from ``config.model`` and ``config.dataset``. ``resume=True`` continues a run folder made with the same
    identity; without it an existing run folder is refused.
    """

    def __init__(self, out: str | Path, config: RunConfig, *, resume: bool = False, lens=None,
                 clips: ClipSplit | None = None, log: Callable[[str], None] | None = None):
        self.dir = Path(out).expanduser()
        self.cfg = config
        self.resume = resume
        self._lens = lens
        self._clips = clips
        self.log = log or (_log_default if config.progress else (lambda msg: None))
        self.timing: dict[str, float] = {}

    # ------------------------------------------------------------------ files
    def path(self, *parts: str) -> Path:
        return self.dir.joinpath(*parts)

    def _read_json(self, *parts: str) -> Any:
        return read_run_json(self.path(*parts))

    @property
    def progress_path(self) -> Path:
        return self.path("progress.json")

    def _save_progress(self) -> None:
        atomic_write_json(self.progress_path, self.progress)

    def done(self, stage: str) -> bool:
        return bool(self.progress["stages"].get(stage, {}).get("done"))

    def _mark(self, stage: str, seconds: float, **extra: Any) -> None:
        self.progress["stages"][stage] = {"done": True, "seconds": round(seconds, 4), **extra}
        self._save_progress()

    def _pause(self, stage: str) -> None:
        """Testing aid: ``ESN_LENS_CHECKPOINT_PAUSE="stats:5"`` sleeps 5 s after each stats checkpoint
        (``"5"``: after every checkpoint), so a test can kill the run at a known point."""
        p = os.environ.get(CHECKPOINT_PAUSE_ENV)
        if p:
            where, _, secs = p.rpartition(":")
            if not where or where == stage:
                time.sleep(float(secs))

    # ------------------------------------------------------------------ identity
    def _open(self, model_id: dict[str, Any]) -> None:
        """Start a new run folder, or check that the existing one is this run (config and model)."""
        ident = self.cfg.identity()
        key = _digest({"config": ident, "model": model_id})
        if self.progress_path.exists():
            if not self.resume:
                raise RunError(f"{self.dir} already holds a run; pass --resume to continue it, or choose another --out")
            try:
                prog = self._read_json("progress.json")
            except OSError as e:
                raise RunError(f"{self.progress_path}: unreadable ({e}); choose another --out") from None
            if prog.get("key") != key:
                diffs = [f"{k}: {prog.get('config', {}).get(k)!r} there, {v!r} now"
                         for k, v in ident.items() if prog.get("config", {}).get(k) != v]
                diffs += [f"model {k}: {prog.get('model', {}).get(k)!r} there, {v!r} now"
                          for k, v in model_id.items() if prog.get("model", {}).get(k) != v]
                raise IncompatibleError(f"{self.dir} was started with another model or configuration "
                                        f"({'; '.join(diffs) or 'different identity'}); resume with the same options "
                                        "or choose another --out")
            self.progress = prog
            self.log(f"resuming {self.dir}: done {[s for s in STAGES if self.done(s)] or 'nothing yet'}")
        else:
            if self.dir.exists() and any(p.name != LOCK_NAME for p in self.dir.iterdir()) and not self.resume:
                raise RunError(f"{self.dir} exists and is not empty; choose another --out")
            self.dir.mkdir(parents=True, exist_ok=True)
            self.progress = {"version": RESULTS_VERSION, "key": key, "config": ident, "model": model_id,
                             "stages": {}, "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
            self._save_progress()
        self.key = key
        atomic_write_json(self.path("config.json"), self.cfg.to_dict())

    # ------------------------------------------------------------------ main
    def preflight(self) -> None:
        """Refuse what needs no model, before any model loads: ``out`` a file, holding a run (without
        ``resume``) or other files, or not writable; bad options (:meth:`RunConfig.check`); a corpus that gives
        no clips or unknown labels (the clips are read here). Creates nothing."""
        self.cfg.check(clips_given=self._clips is not None, lens_given=self._lens is not None)
        d = self.dir
        if d.exists() and not d.is_dir():
            raise RunError(f"--out {d} is a file, not a folder; choose another --out")
        if d.is_dir():
            if self.progress_path.exists():
                if not self.resume:
                    raise RunError(f"{d} already holds a run; pass --resume to continue it, or choose another --out")
            elif any(p.name != LOCK_NAME for p in d.iterdir()):
                if self.resume:
                    raise RunError(f"{d} holds no run to resume (no progress.json)")
                raise RunError(f"{d} exists and is not empty; choose another --out")
        anc = d
        while not anc.exists() and anc != anc.parent:
            anc = anc.parent
        if not anc.is_dir():
            raise RunError(f"--out {d}: {anc} is a file, not a folder; choose another --out")
        try:  # a real write: os.access says yes to root on a read-only mount
            fd, probe = tempfile.mkstemp(dir=anc, prefix=".esn_lens_probe.")
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise RunError(f"--out {d}: cannot write in {anc} ({e.strerror or e}); choose another --out") from None
        if self._clips is None:
            self._clips_loaded = screen_clips(load_clips(self.cfg), self.cfg)
            n = len(self._clips_loaded.source.get("skipped", []))
            if n:
                self.log(f"[data] skipping {n} bad clip(s): " + "; ".join(
                    f"{s['id']} ({s['reason']})" for s in self._clips_loaded.source["skipped"][:5])
                    + (" ..." if n > 5 else "") + " (listed in clips.json and results.json)")

    def _acquire_lock(self) -> None:
        """Create the run folder (remembering whether this command did) and its lock file; refuse a folder
        another live process holds."""
        self._created = not self.dir.exists()
        self.dir.mkdir(parents=True, exist_ok=True)
        lock = self.path(LOCK_NAME)
        for _ in range(2):
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    pid = int(lock.read_text().split()[0])
                except (OSError, ValueError, IndexError):
                    pid = -1
                if pid > 0 and pid != os.getpid() and _alive(pid):
                    raise RunError(f"{self.dir} is in use by another esn-lens run (pid {pid}; lock file {lock}); "
                                   "wait for it to finish, or remove the lock file if that process is gone") from None
                lock.unlink(missing_ok=True)  # stale: its process is gone
                continue
            with os.fdopen(fd, "w") as f:
                f.write(f"{os.getpid()} {time.strftime('%Y-%m-%dT%H:%M:%S')}\n")
            self._lock = lock
            return
        raise RunError(f"{self.dir}: cannot take the lock file {lock}")

    def _release(self, failed: bool) -> None:
        """Drop the lock; after a failure, remove a folder this command created if no stage completed."""
        lock = getattr(self, "_lock", None)
        if lock is not None:
            lock.unlink(missing_ok=True)
            self._lock = None
        stages = getattr(self, "progress", {}).get("stages", {})
        if failed and getattr(self, "_created", False) and not any(v.get("done") for v in stages.values()):
            shutil.rmtree(self.dir, ignore_errors=True)

    def execute(self) -> dict[str, Any]:
        """Run every stage not yet done; return the results (also written to ``results.json``).

        Everything that needs no model is checked first (:meth:`preflight`); a lock file in the folder stops
        a second run on it; a command that fails before any stage completes leaves no folder behind."""
        self.preflight()
        self._acquire_lock()
        ok = False
        try:
            results = self._execute()
            ok = True
            return results
        finally:
            self._release(failed=not ok)

    def _execute(self) -> dict[str, Any]:
        cfg = self.cfg
        t_all = time.perf_counter()
        if cfg.threads:
            torch.set_num_threads(int(cfg.threads))
        t0 = time.perf_counter()
        self.log(f"loading model {cfg.model}" + (" (given)" if self._lens is not None else ""))
        lens = self._lens if self._lens is not None else load_lens(cfg)
        self.lens = lens
        model_id = {"name": normalise_model(cfg.model), "class": type(lens.model).__name__, "adapter": lens.adapter.name,
                    "fingerprint": lens.fingerprint, "weights": weights_digest(lens.model),
                    "n_layers": lens.n_layers, "d_mlp": lens.d_mlp,
                    "dtype": str(next(lens.model.parameters()).dtype).replace("torch.", "")}
        self.model_id = model_id
        self.timing["load"] = time.perf_counter() - t0
        self._open(model_id)
        from .evaluate import SEREvaluator

        self._stage_data()
        self.evaluator = SEREvaluator(lens, self.split.emotions, mode=cfg.mode, answer=cfg.answer, seed=cfg.seed,
                                      max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size,
                                      num_workers=cfg.workers)
        if cfg.discover:
            self._stage_pool()
            self._stage_stats()
        self._stage_neurons()
        if cfg.validate:
            self._stage_deactivation()
            self._stage_steering()
        results = self._stage_analysis()
        self._stage_report(results)
        results["timing"] = self._timing(time.perf_counter() - t_all)
        atomic_write_json(self.path("results.json"), results)
        self.log(f"done: {self.path('report.md')}")
        return results

    def _timing(self, session_total: float) -> dict[str, float]:
        t = {s: float(self.progress["stages"][s]["seconds"]) for s in STAGES if self.done(s)}
        t["load"] = round(self.timing.get("load", 0.0), 4)
        t["total"] = round(sum(v for k, v in t.items()), 4)
        t["this_session"] = round(session_total, 4)
        return t

    # ------------------------------------------------------------------ stage: data
    def _stage_data(self) -> None:
        t0 = time.perf_counter()
        split = self._clips if self._clips is not None else (getattr(self, "_clips_loaded", None) or load_clips(self.cfg))
        if self._clips is not None:
            split = _restrict_emotions(ClipSplit(list(split.identification), list(split.evaluation),
                                                 tuple(split.emotions), dict(split.source)), self.cfg)
        self.split = split
        ids = {"identification": [c.utterance_id for c in split.identification],
               "evaluation": [c.utterance_id for c in split.evaluation]}
        for side, lst in ids.items():
            if len(set(lst)) != len(lst):
                raise InputError(f"{side} clips repeat utterance ids; every clip needs a distinct id")
        if self.done("data"):
            prev = self._read_json("clips.json")
            if prev["emotions"] != list(split.emotions) or prev["ids"] != ids:
                raise IncompatibleError(f"the clips differ from those {self.dir} was started with (the corpus "
                                        "changed on disk?); choose another --out")
            return
        info = {"emotions": list(split.emotions), "source": split.source, "ids": ids,
                "counts": {"identification": _counts(split.identification, split.emotions),
                           "evaluation": _counts(split.evaluation, split.emotions)}}
        atomic_write_json(self.path("clips.json"), info)
        self.log(f"[data] {len(split.identification)} identification / {len(split.evaluation)} evaluation clips, "
                 f"emotions {list(split.emotions)}")
        self._mark("data", time.perf_counter() - t0)

    # ------------------------------------------------------------------ resumable evaluation
    def _evaluate(self, stage: str, clips: list[EmotionClip], conditions: list) -> dict[str, Any]:
        """Run ``conditions`` over ``clips`` with checkpoints; returns {condition: {pred, answers}} as stored."""
        final = self.path("eval", f"{stage}.json")
        names = [c.name for c in conditions]
        ids = [c.utterance_id for c in clips]
        sig = _digest({"conditions": names, "clips": ids, "key": self.key})
        if self.done(stage):
            return self._read_json("eval", f"{stage}.json")
        ckpt = self.path("checkpoints", f"{stage}.json")
        state = {"sig": sig, "consumed": 0, "elapsed": 0.0, "pred": {n: [] for n in names},
                 "answers": {n: [] for n in names}}
        if ckpt.exists():
            prev = read_run_json(ckpt)
            if prev.get("sig") != sig:
                raise IncompatibleError(f"checkpoint {ckpt} belongs to another model, configuration or clip list; "
                                        "choose another --out")
            state = prev
            self.log(f"[{stage}] resuming from clip {state['consumed']} of {len(clips)}")
        from tqdm.auto import tqdm

        step = self.cfg.batch_size * self.cfg.checkpoint_every
        bar = tqdm(total=len(clips), initial=state["consumed"], desc=f"{stage} ({len(conditions)} conditions)",
                   unit="clip", disable=not self.cfg.progress, file=sys.stderr)
        t0 = time.perf_counter()
        for start in range(state["consumed"], len(clips), step):
            chunk = clips[start:start + step]
            res = self.evaluator.run(chunk, conditions)
            for n in names:
                state["pred"][n].extend(res[n].predictions)
                state["answers"][n].extend(res[n].answers)
            state["consumed"] = start + len(chunk)
            bar.update(len(chunk))
            if state["consumed"] < len(clips):
                state["elapsed"] = state.get("elapsed", 0.0) + time.perf_counter() - t0
                t0 = time.perf_counter()
                atomic_write_json(ckpt, state)
                self._pause(stage)
        bar.close()
        elapsed = state.get("elapsed", 0.0) + time.perf_counter() - t0
        out = {"conditions": names, "clips": ids, "labels": [c.emotion for c in clips],
               "pred": state["pred"], "answers": state["answers"]}
        atomic_write_json(final, out)
        self._mark(stage, elapsed)
        if ckpt.exists():
            ckpt.unlink()
        return out

    def _results_of(self, stored: dict[str, Any]):
        from .evaluate import SERResult

        E = self.split.emotions
        return {n: SERResult(n, E, stored["labels"], stored["pred"][n], stored["answers"][n]) for n in stored["conditions"]}

    # ------------------------------------------------------------------ stage: pool
    def _stage_pool(self) -> None:
        if self.done("pool"):
            self.pool_ids = self._read_json("pool.json")["ids"]
            return
        clips = self.split.identification
        self.log(f"[pool] SER on {len(clips)} identification clips")
        from .interventions import Condition

        stored = self._evaluate("identification", clips, [Condition("baseline", [])])
        t0 = time.perf_counter()
        res = self._results_of(stored)["baseline"]
        pool = balanced_pool(clips, res.correct(), self.split.emotions, cap=self.cfg.pool_cap, seed=self.cfg.seed,
                             min_per_emotion=1)
        counts = _counts(pool, self.split.emotions)
        info = {"ids": [c.utterance_id for c in pool], "counts": counts, "accuracy": res.accuracy,
                "per_class": res.per_class(), "unparsed": res.n_unparsed,
                "correct": _counts([c for c, ok in zip(clips, res.correct()) if ok], self.split.emotions)}
        atomic_write_json(self.path("pool.json"), info)
        self.pool_ids = info["ids"]
        self.log(f"[pool] identification accuracy {res.accuracy:.3f}; pool {counts}")
        self._mark("pool", time.perf_counter() - t0 + float(self.progress["stages"]["identification"]["seconds"]))

    # ------------------------------------------------------------------ stage: stats
    def _stage_stats(self) -> None:
        from .stats import NeuronStats

        if self.done("stats"):
            self.stats = NeuronStats.load(self.path("stats.safetensors"), expect_fingerprint=self.lens.fingerprint)
            return
        by_id = {c.utterance_id: c for c in self.split.identification}
        pool = [by_id[i] for i in self.pool_ids]
        ckpt = self.path("checkpoints", "stats.safetensors")
        stats = self.lens.new_stats(self.split.emotions, self.cfg.site, self.cfg.positions)
        consumed, elapsed = 0, 0.0
        if ckpt.exists():
            tensors, meta = load_tensors(ckpt, STATS_CHECKPOINT_KIND)
            if meta.get("key") != self.key or meta.get("model_fingerprint") != self.lens.fingerprint:
                raise IncompatibleError(f"checkpoint {ckpt} was written by another model or configuration "
                                        f"(model {meta.get('model_fingerprint')!r}, this model {self.lens.fingerprint!r}); "
                                        "choose another --out")
            stats = NeuronStats.from_state_dict({"meta": meta["stats"], **tensors}, device=stats.K.device)
            consumed, elapsed = int(meta["consumed"]), float(meta.get("elapsed", 0.0))
            self.log(f"[stats] resuming from clip {consumed} of {len(pool)}")
        else:
            self.log(f"[stats] {self.cfg.site} statistics over {len(pool)} pool clips")
        clock = {"t0": time.perf_counter(), "elapsed": elapsed, "batches": 0}

        def checkpoint(consumed: int, stats) -> None:
            clock["batches"] += 1
            if clock["batches"] % self.cfg.checkpoint_every == 0 and consumed < len(pool):
                clock["elapsed"] += time.perf_counter() - clock["t0"]
                clock["t0"] = time.perf_counter()
                sd = stats.state_dict()
                save_tensors(ckpt, {k: v for k, v in sd.items() if k != "meta"}, STATS_CHECKPOINT_KIND,
                             {"stats": sd["meta"], "consumed": consumed, "elapsed": clock["elapsed"], "key": self.key,
                              "model_fingerprint": self.lens.fingerprint})
                self._pause("stats")

        self.lens.collect_stats(pool, [self.evaluator.prompt(c).text for c in pool], self.split.emotions,
                                batch_size=self.cfg.batch_size, stats=stats, progress=self.cfg.progress,
                                start=consumed, on_batch=checkpoint, num_workers=self.cfg.workers)
        elapsed, t0 = clock["elapsed"], clock["t0"]
        elapsed += time.perf_counter() - t0
        stats.save(self.path("stats.safetensors"))
        self.stats = stats
        self._mark("stats", elapsed)
        if ckpt.exists():
            ckpt.unlink()

    # ------------------------------------------------------------------ stage: neurons
    def _stage_neurons(self) -> None:
        """Select with every selector (and read transferred sets); a resumed run reads its own saved copies."""
        from .neurons import NeuronSet
        from .selectors import find_neurons

        t0 = time.perf_counter()
        self.sets: dict[str, NeuronSet] = {}
        self.sources: dict[str, str] = {}
        if self.done("neurons"):
            info = self.progress["stages"]["neurons"]
            for name in info["names"]:
                self.sets[name] = NeuronSet.load(self.path("neurons", f"{_safe_name(name)}.safetensors"),
                                                 expect_fingerprint=self.lens.fingerprint)
            self.sources = dict(info["sources"])
            return
        if self.cfg.discover:
            for sel in self.cfg.selectors:
                self.sets[sel] = find_neurons(self.stats, sel, top_frac=float(self.cfg.top_frac), seed=self.cfg.seed,
                                              meta={"corpus": self._corpus_tag(), "model": self.cfg.model,
                                                    "run": self.dir.name})
                self.sources[sel] = "discovered"
        transferred = self._load_transfer()
        for name, (ns, src) in transferred.items():
            self.sets[name] = ns
            self.sources[name] = src
        if self.cfg.validate and transferred and "random" not in self.sets:
            first = next(iter(transferred))
            self.sets["random"] = random_like(transferred[first][0], self.split.emotions, seed=self.cfg.seed)
            self.sources["random"] = f"random units, same budget as {first}"
        names = [_safe_name(n) for n in self.sets]
        if len(set(names)) != len(names):
            raise InputError(f"neuron set names {list(self.sets)} collide as file names")
        for name, ns in self.sets.items():
            ns.save(self.path("neurons", f"{_safe_name(name)}.safetensors"))
        self.log(f"[neurons] {', '.join(f'{n}: {sum(ns.counts.values())}' for n, ns in self.sets.items())} units")
        self._mark("neurons", time.perf_counter() - t0, names=list(self.sets), sources=self.sources)

    def _corpus_tag(self) -> str:
        """A short name of the identification corpus (names transferred sets, e.g. ``mad@iemocap``)."""
        ds = self.cfg.dataset
        if ds in ("manifest", "hf") and self.cfg.data_dir:
            return Path(self.cfg.data_dir).expanduser().resolve().name
        return ds

    def _load_transfer(self) -> dict[str, tuple[Any, str]]:
        from .neurons import NeuronSet

        files: list[Path] = []
        for p in self.cfg.neurons:
            p = Path(p).expanduser()
            found = sorted(p.glob("*.safetensors")) if p.is_dir() else [p]
            if not found:
                raise InputError(f"no neuron files (*.safetensors) in {p}")
            files.extend(found)
        out: dict[str, tuple[Any, str]] = {}
        for f in files:
            ns = NeuronSet.load(f, expect_fingerprint=self.lens.fingerprint)
            if (ns.n_layers, ns.d_mlp) != (self.lens.n_layers, self.lens.d_mlp):
                raise IncompatibleError(f"{f}: neuron set is for {ns.n_layers}x{ns.d_mlp} units, the model has "
                                        f"{self.lens.n_layers}x{self.lens.d_mlp}")
            shared = [e for e in self.split.emotions if e in ns.emotions]
            if len(shared) < 2:
                raise InputError(f"{f}: its emotions {list(ns.emotions)} share fewer than 2 with the run's "
                                 f"{list(self.split.emotions)}")
            tag = ns.meta.get("corpus") or f.parent.parent.name or f.stem
            name = f"{ns.selector}@{tag}"
            base, k = name, 2
            while name in out or name in self.sets:
                name, k = f"{base}#{k}", k + 1
            out[name] = (ns, str(f))
        return out

    # ------------------------------------------------------------------ stages: interventions
    def _conditions(self, build, **kwargs) -> list:
        """Baseline + every selector's conditions (named ``<selector>|...``), from esn_lens.evaluate."""
        from .interventions import Condition

        conds = [Condition("baseline", [])]
        for name, ns in self.sets.items():
            conds += build(ns, prefix=f"{name}|", emotions=self.split.emotions, **kwargs)[1:]
        return conds

    def _deactivation_conditions(self) -> list:
        from .evaluate import deactivation_conditions

        kw = {"stats": self.stats} if self.cfg.intervention == "mean_ablate" else {}
        return self._conditions(deactivation_conditions, kind=self.cfg.intervention, **kw)

    def _steering_conditions(self) -> list:
        from .evaluate import steering_conditions

        return self._conditions(steering_conditions, alphas=self.cfg.alphas)

    def _stage_deactivation(self) -> None:
        conds = self._deactivation_conditions()
        if not self.done("deactivation"):
            self.log(f"[deactivation] baseline + {len(conds) - 1} masks on {len(self.split.evaluation)} clips")
        self.deact = self._evaluate("deactivation", self.split.evaluation, conds)

    def _stage_steering(self) -> None:
        if not self.cfg.alphas:
            self.steer = None
            return
        conds = self._steering_conditions()
        if not self.done("steering"):
            self.log(f"[steering] baseline + {len(conds) - 1} steered conditions on {len(self.split.evaluation)} clips")
        self.steer = self._evaluate("steering", self.split.evaluation, conds)

    # ------------------------------------------------------------------ stage: analysis
    def _stage_analysis(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        res = analyse(self)
        atomic_write_json(self.path("results.json"), res)
        prev = self.progress["stages"].get("analysis", {}).get("seconds")
        self._mark("analysis", prev if prev is not None else time.perf_counter() - t0)
        return res

    def _stage_report(self, results: dict[str, Any]) -> None:
        t0 = time.perf_counter()
        from .report import write_report

        results = dict(results)
        results["timing"] = self._timing(0.0)
        write_report(self.dir, results)
        prev = self.progress["stages"].get("report", {}).get("seconds")
        self._mark("report", prev if prev is not None else time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------------- helpers
def random_like(ns, emotions: Sequence[str], seed: int = 0):
    """Random units with the same per-emotion budget as ``ns`` (the random baseline of a transferred set)."""
    from .neurons import NeuronSet

    g = torch.Generator().manual_seed(int(seed))
    masks = torch.zeros(len(emotions), ns.n_layers, ns.d_mlp, dtype=torch.bool)
    counts = ns.counts
    k_default = max(counts.values()) if counts else 0
    for i, e in enumerate(emotions):
        k = counts.get(e, k_default)
        perm = torch.randperm(ns.n_layers * ns.d_mlp, generator=g)[:k]
        masks[i].view(-1)[perm] = True
    return NeuronSet(masks, tuple(emotions), selector="random", top_frac=ns.top_frac, site=ns.site,
                     model_fingerprint=ns.model_fingerprint, meta={"random_like": ns.selector, "seed": seed})


def _f(x: Any) -> float | None:
    x = float(x)
    return None if math.isnan(x) else round(x, 6)


def _bootstrap_indices(labels: np.ndarray, emotions: Sequence[str], n_boot: int, seed: int) -> np.ndarray:
    """Stratified (per emotion) bootstrap resamples of clip indices: (n_boot, n_clips)."""
    rng = np.random.default_rng(seed)
    cols = []
    for e in emotions:
        idx = np.flatnonzero(labels == e)
        if idx.size:
            cols.append(idx[rng.integers(0, idx.size, size=(n_boot, idx.size))])
    return np.concatenate(cols, axis=1)


def _heatmap_reps(correct: dict[str, np.ndarray], labels: np.ndarray, rows: Sequence[str], cols: Sequence[str],
                  cond_of: Callable[[str], str], boot: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Accuracy-change heatmap (rows: masked emotion, cols: evaluated emotion) and its bootstrap replicates."""
    base = correct["baseline"]
    H = np.zeros((len(rows), len(cols)))
    reps = None if boot is None else np.zeros((boot.shape[0], len(rows), len(cols)))
    for j, e in enumerate(cols):
        m = labels == e
        b = base[m].mean()
        if reps is not None:
            bl, bm = labels[boot], base[boot]
            cnt = (bl == e).sum(1)
            b_rep = (bm * (bl == e)).sum(1) / np.maximum(cnt, 1)
        for i, r in enumerate(rows):
            c = correct[cond_of(r)]
            H[i, j] = c[m].mean() - b
            if reps is not None:
                reps[:, i, j] = (c[boot] * (bl == e)).sum(1) / np.maximum(cnt, 1) - b_rep
    return H, reps


def _ci(x: np.ndarray) -> list[float | None]:
    lo, hi = np.quantile(x, [0.025, 0.975])
    return [_f(lo), _f(hi)]


def analyse(run: Run) -> dict[str, Any]:
    """Turn a run's stored predictions, neuron sets and pool into the results dict (deterministic)."""
    from .evaluate import specificity

    cfg, split = run.cfg, run.split
    E = list(split.emotions)
    clips_info = run._read_json("clips.json")
    res: dict[str, Any] = {
        "version": RESULTS_VERSION,
        "config": cfg.identity(),
        "model": run.model_id,
        "emotions": E,
        "clips": {"identification": clips_info["counts"]["identification"],
                  "evaluation": clips_info["counts"]["evaluation"], "source": clips_info.get("source", {}),
                  "skipped": list(clips_info.get("source", {}).get("skipped", []))},
    }
    if cfg.discover:
        pool = run._read_json("pool.json")
        res["clips"]["pool"] = pool["counts"]
        res["identification"] = {"accuracy": _f(pool["accuracy"]),
                                 "per_class": {e: _f(v) for e, v in pool["per_class"].items()},
                                 "unparsed": pool["unparsed"], "correct": pool["correct"]}
    L, N = run.lens.n_layers, run.lens.d_mlp
    sel: dict[str, Any] = {}
    for name, ns in run.sets.items():
        lc = ns.layer_counts()
        sel[name] = {"source": run.sources[name], "selector": ns.selector, "top_frac": ns.top_frac,
                     "emotions": list(ns.emotions), "counts": ns.counts, "units": L * N,
                     "layer_counts": {"per_emotion": {e: lc[i].tolist() for i, e in enumerate(ns.emotions)},
                                      "total": lc.sum(0).tolist()}}
    if cfg.validate:
        labels = np.array(run.deact["labels"])
        correct = {n: np.array([p == y for p, y in zip(run.deact["pred"][n], labels)], dtype=float)
                   for n in run.deact["conditions"]}
        base = run._results_of(run.deact)["baseline"]
        res["baseline"] = {"accuracy": _f(base.accuracy), "per_class": {e: _f(v) for e, v in base.per_class().items()},
                           "unparsed": base.n_unparsed, "n": len(labels)}
        boot = _bootstrap_indices(labels, E, cfg.bootstrap, cfg.seed) if cfg.bootstrap else None
        if boot is not None:
            res["baseline"]["ci"] = _ci(correct["baseline"][boot].mean(1))
        ess_reps: dict[str, np.ndarray] = {}
        for name, ns in run.sets.items():
            rows = [e for e in E if e in ns.emotions]
            H, reps = _heatmap_reps(correct, labels, rows, rows, lambda r, n=name: f"{n}|mask:{r}", boot)
            sp = specificity(H)
            d = {"emotions": rows, "heatmap": [[_f(v) for v in row] for row in H],
                 "se": {e: _f(v) for e, v in zip(rows, sp["se"])}, "ace": {e: _f(v) for e, v in zip(rows, sp["ace"])},
                 "ess": {e: _f(v) for e, v in zip(rows, sp["ess"])}, "se_mean": _f(sp["se_mean"]),
                 "ace_mean": _f(sp["ace_mean"]), "ess_mean": _f(sp["ess_mean"]),
                 "accuracy": {e: _f(correct[f"{name}|mask:{e}"].mean()) for e in rows},
                 "unparsed": {e: int(sum(p is None for p in run.deact["pred"][f"{name}|mask:{e}"])) for e in rows}}
            if reps is not None:
                se_r, ace_r, ess_r = se_ace_ess(reps)
                d["ci"] = {"se": {e: _ci(se_r[:, i]) for i, e in enumerate(rows)},
                           "ess": {e: _ci(ess_r[:, i]) for i, e in enumerate(rows)},
                           "se_mean": _ci(se_r.mean(1)), "ace_mean": _ci(ace_r.mean(1)), "ess_mean": _ci(ess_r.mean(1))}
                if rows == E:
                    ess_reps[name] = ess_r.mean(1)
            sel[name]["deactivation"] = d
        if "random" in ess_reps:
            for name, r in ess_reps.items():
                if name != "random":
                    diff = r - ess_reps["random"]
                    sel[name]["deactivation"]["ci"]["ess_mean_minus_random"] = _ci(diff)
        if run.steer is not None:
            sres = run._results_of(run.steer)
            s_correct = {n: np.array([p == y for p, y in zip(run.steer["pred"][n], labels)], dtype=float)
                         for n in run.steer["conditions"]}
            for name, ns in run.sets.items():
                rows = [e for e in E if e in ns.emotions]
                shift = {}
                for e in rows:
                    b = sres["baseline"].share(e)
                    shift[e] = [_f(sres[f"{name}|steer:{e}:{a:g}"].share(e) - b) for a in cfg.alphas]
                mean = [_f(np.mean([shift[e][i] for e in rows])) for i in range(len(cfg.alphas))]
                heat = {}
                for a in cfg.alphas:
                    H, _ = _heatmap_reps(s_correct, labels, rows, rows, lambda r, n=name, a=a: f"{n}|steer:{r}:{a:g}", None)
                    heat[f"{a:g}"] = [[_f(v) for v in row] for row in H]
                sel[name]["steering"] = {
                    "alphas": list(cfg.alphas), "emotions": rows, "target_shift": shift, "target_shift_mean": mean,
                    "heatmaps": heat,
                    "unparsed": {f"{e}:{a:g}": int(sres[f"{name}|steer:{e}:{a:g}"].n_unparsed) for e in rows
                                 for a in cfg.alphas}}
    res["selectors"] = sel
    res["layers"] = layer_analysis(run.sets, L)
    return res


def layer_analysis(sets: dict[str, Any], n_layers: int) -> dict[str, Any]:
    """Per-layer counts of every set and the Jaccard overlap between sets (per emotion and mean)."""
    names = list(sets)
    out: dict[str, Any] = {"n_layers": n_layers, "counts": {n: sets[n].layer_counts().sum(0).tolist() for n in names}}
    comparable = [n for n in names if sets[n].emotions == sets[names[0]].emotions
                  and sets[n].model_fingerprint == sets[names[0]].model_fingerprint and sets[n].site == sets[names[0]].site]
    if len(comparable) >= 1:
        emotions = sets[comparable[0]].emotions
        per = {e: [[1.0] * len(comparable) for _ in comparable] for e in emotions}
        mean = [[1.0] * len(comparable) for _ in comparable]
        for i, a in enumerate(comparable):
            for j, b in enumerate(comparable):
                if i < j:
                    jac = sets[a].jaccard(sets[b])
                    for e in emotions:
                        per[e][i][j] = per[e][j][i] = _f(jac[e])
                    mean[i][j] = mean[j][i] = _f(np.mean(list(jac.values())))
        out["overlap"] = {"metric": "jaccard", "selectors": comparable, "mean": mean, "per_emotion": per}
    cross = {}
    for n in names:
        if "@" in n:
            own = n.split("@")[0]
            if own in sets and "@" not in own:
                m = sets[own].overlap_matrix(sets[n], "jaccard", same_model=False)
                cross[n] = {"own": own, "rows": list(sets[own].emotions), "cols": list(sets[n].emotions),
                            "jaccard": [[_f(v) for v in row] for row in m.tolist()]}
    if cross:
        out["cross_dataset"] = cross
    return out


def run_pipeline(config: RunConfig, out: str | Path, *, resume: bool = False, lens=None,
                 clips: ClipSplit | None = None, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Execute (or resume) a run in ``out``; returns the results dict (see the module docstring)."""
    return Run(out, config, resume=resume, lens=lens, clips=clips, log=log).execute()


def load_results(run_dir: str | Path) -> dict[str, Any]:
    """``results.json`` of a finished run, with a clear error for a folder that is not one."""
    p = Path(run_dir).expanduser()
    if not p.is_dir():
        raise InputError(f"run folder {run_dir} does not exist")
    f = p / "results.json"
    if not f.is_file():
        hint = " (the run did not finish; continue it with --resume)" if (p / "progress.json").exists() else ""
        raise InputError(f"{p} holds no results.json{hint}")
    return read_run_json(f)


__all__ = ["RunConfig", "ClipSplit", "Run", "RunError", "run_pipeline", "load_results", "load_clips", "load_lens",
           "random_like", "analyse", "layer_analysis", "weights_digest", "PAPER_SELECTORS", "STAGES"]
