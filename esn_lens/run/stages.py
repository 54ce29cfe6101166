"""The built-in run stages and :class:`Run`, which walks the registered stages (:mod:`.registry`) in order.

Every stage is registered with ``@register_stage(name, needs=..., produces=..., when=..., after=...)`` -- the
built-ins exactly as a plugin's -- and runs with a :class:`~esn_lens.run.registry.StageContext` that checks what it
reads and sets against that declaration. A stage marks itself done in ``progress.json``; a done stage re-reads its
saved output, so a resumed run continues where it stopped. Streaming statistics go through :meth:`StageContext.
accumulate` (:mod:`.accumulate`), SER conditions through :meth:`StageContext.evaluate`.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable

import torch

from ..errors import InputError
from ..logs import ensure_handler
from ..interventions import Condition
from .accumulate import accumulate
from .config import RunConfig, normalise_model
from .data import (ClipSplit, counts, load_clips, load_lens, restrict_emotions, resume_clips, screen_clips,
                   weights_digest)
from .folder import RunFolder, digest
from .parallel import Parallel
from .atp import stage_attribution, wanted as atp_wanted
from .collect import STATS_CHECKPOINT_KIND, StatsAccumulator, stage_stats  # noqa: F401
from .registry import STAGE_REGISTRY, Stage, StageContext, register_stage, stage_order
from .sets import stage_neurons
from .topk import stage_top, wanted as top_wanted


LOGGER = logging.getLogger("esn_lens.run")


def _log_default(msg: str) -> None:
    """Stage lines go to the ``esn_lens.run`` logger (the CLI's --quiet / --verbose set its level); with no logging
    configured anywhere they still reach stderr."""
    ensure_handler()
    LOGGER.info(msg)


class Run:
    """One run folder: executes the stages not yet done and returns the results dict.

    ``lens`` / ``clips`` may be given directly (Python API, tutorials, tests); otherwise they are loaded from
    ``config.model`` and ``config.dataset``. ``resume=True`` continues a run folder made with the same identity;
    without it an existing run folder is refused. Under ``torchrun`` (a ``torch.distributed`` process group, or
    ``WORLD_SIZE`` > 1 in the environment) every rank computes its share and rank 0 writes the folder.
    """

    def __init__(self, out: str | Path, config: RunConfig, *, resume: bool = False, lens=None,
                 clips: ClipSplit | None = None, log: Callable[[str], None] | None = None):
        self.cfg = config
        self.par = Parallel.from_env()
        quiet = (lambda msg: None)
        self.log = (log or (_log_default if config.progress else quiet)) if self.par.main else quiet
        self.folder = RunFolder(out, resume=resume, main=self.par.main, log=self.log, barrier=self.par.barrier)
        self.dir = self.folder.dir
        self.given_lens, self.given_clips = lens, clips
        self.timing: dict[str, float] = {}
        self.lens = lens
        self.model_id: dict[str, Any] = {}
        self.loaded_clips: ClipSplit | None = None
        #: the stages' products by name (``split``, ``evaluator``, ``pool_ids``, ``stats``, ``attribution``,
        #: ``sets``, ``sources``, ``deact``, ``steer``, ``results``, and any a plugin stage declares)
        self.products: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        products = self.__dict__.get("products", {})
        if name in products:
            return products[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def path(self, *parts: str) -> Path:
        return self.folder.path(*parts)

    # ------------------------------------------------------------------ before any model loads
    def preflight(self) -> None:
        """Refuse what needs no model: bad options (:meth:`RunConfig.check`), a bad ``out`` (rank 0), a corpus that
        gives no clips or unknown labels (the clips are read here). Creates nothing."""
        self.cfg.check(clips_given=self.given_clips is not None, lens_given=self.given_lens is not None)
        if self.par.main:
            self.folder.preflight()
        if self.given_clips is None:
            self.loaded_clips = screen_clips(load_clips(self.cfg), self.cfg)
            skipped = self.loaded_clips.source.get("skipped", [])
            if skipped:
                self.log(f"[data] skipping {len(skipped)} bad clip(s): " + "; ".join(
                    f"{s['id']} ({s['reason']})" for s in skipped[:5]) + (" ..." if len(skipped) > 5 else "")
                    + " (listed in clips.json and results.json)")

    def execute(self) -> dict[str, Any]:
        """Run every stage not yet done; return the results (also written to ``results.json``).

        Everything that needs no model is checked first (:meth:`preflight`); a lock file in the folder stops a second
        run on it; a command that fails before any stage completes leaves no folder behind."""
        self.par.agree(self.preflight, "preflight")
        if self.par.main:
            self.folder.acquire_lock()
        ok = False
        try:
            results = self._walk()
            ok = True
            return results
        finally:
            if self.par.main:
                self.folder.release(failed=not ok)
            self.par.close()

    def _walk(self) -> dict[str, Any]:
        t_all = time.perf_counter()
        if self.cfg.threads:
            torch.set_num_threads(int(self.cfg.threads))
        self.par.agree(self._load_model, "loading the model")
        ident = self.cfg.identity()
        if self.par.main:  # rank 0 opens (or checks) the folder; then the others read it
            self.par.agree(lambda: self.folder.open(ident, self.model_id, self.cfg.to_dict(),
                                                             [s.name for s in stage_order()]),
                           "opening the run folder")
        else:
            self.par.agree(lambda: None, "opening the run folder")
            self.par.agree(lambda: self.folder.join(ident, self.model_id), "joining the run folder")
        if self.par.main:
            self.par.agree(lambda: None, "joining the run folder")
        for stage in stage_order():
            if not stage.when(self.cfg):
                self.products.update({p: None for p in stage.produces})
                continue
            ctx = RunContext(self, stage, self.products)
            stage.fn(ctx)
            ctx.check_done()
            self.par.barrier()
        results = dict(self.products.get("results") or {})
        results["timing"] = self.timings(time.perf_counter() - t_all)
        self.folder.write_json(results, "results.json")
        self.log(f"done: {self.path('report.md')}")
        return results

    def _load_model(self) -> None:
        cfg = self.cfg
        t0 = time.perf_counter()
        self.log(f"loading model {cfg.model}" + (" (given)" if self.given_lens is not None else ""))
        LOGGER.debug(f"run configuration: {cfg.identity()}")
        lens = self.given_lens if self.given_lens is not None else load_lens(cfg, device=self.par.device(cfg.device))
        if cfg.units == "encoder":  # the audio encoder's MLP neurons as units
            from ..adapters.encoder import encoder_lens

            lens = encoder_lens(lens)
        self.lens = lens
        self.model_id = {"name": normalise_model(cfg.model), "class": type(lens.model).__name__,
                         "adapter": lens.adapter.name, "fingerprint": lens.fingerprint,
                         "weights": weights_digest(lens.model), "n_layers": lens.n_layers, "d_mlp": lens.d_mlp,
                         "dtype": str(next(lens.model.parameters()).dtype).replace("torch.", "")}
        self.timing["load"] = time.perf_counter() - t0

    def timings(self, session_total: float) -> dict[str, float]:
        t = {s.name: float(self.folder.progress["stages"][s.name]["seconds"]) for s in stage_order()
             if self.folder.done(s.name)}
        t["load"] = round(self.timing.get("load", 0.0), 4)
        t["total"] = round(sum(v for k, v in t.items()), 4)
        t["this_session"] = round(session_total, 4)
        return t

class RunContext(StageContext):
    """A stage's view of the :class:`Run` (see :class:`~esn_lens.run.registry.StageContext`), with the two
    checkpointed loops a stage streams through."""

    def accumulate(self, acc, items, *, file: str, **kw):
        """:func:`esn_lens.run.accumulate` for this stage: feed ``items`` to the accumulator ``acc`` with chunks,
        checkpoints, resume and torchrun sums; returns ``acc``."""
        return accumulate(self, acc, items, file=file, **kw)

    def evaluate(self, stage: str, clips: list, conditions: list[Condition]) -> dict[str, Any]:
        """Run ``conditions`` over ``clips`` through the checkpointed loop; returns name -> SERResult (with spec).
        Reads the products ``evaluator`` and ``split`` (declare them in the stage's needs)."""
        from ..evaluate import SERResult

        f = self.folder
        names = [c.name for c in conditions]
        ids = [c.utterance_id for c in clips]
        if f.done(stage):
            stored = f.read_json("eval", f"{stage}.json")
        else:
            sig = digest({"conditions": names, "clips": ids, "key": f.key})
            state: dict[str, Any] = {"sig": sig, "pred": {n: [] for n in names}, "answers": {n: [] for n in names}}

            def load(ckpt: Path) -> tuple[int, float]:
                prev = f.read_json("checkpoints", ckpt.name)
                f.check_checkpoint(ckpt, prev.get("sig") == sig)
                state.update(pred=prev["pred"], answers=prev["answers"])
                return int(prev["consumed"]), float(prev.get("elapsed", 0.0))

            def save(ckpt: Path, consumed: int, elapsed: float) -> None:
                f.write_json({**state, "consumed": consumed, "elapsed": elapsed}, "checkpoints", ckpt.name)

            def work(chunk: list) -> None:
                res = self.par.evaluate(self.evaluator, chunk, conditions)
                for n in names:
                    state["pred"][n].extend(res[n].predictions)
                    state["answers"][n].extend(res[n].answers)

            secs = f.stream(stage, clips, self.cfg.batch_size * self.cfg.checkpoint_every, work=work, save=save,
                            load=load, checkpoint=f"{stage}.json", desc=f"{stage} ({len(conditions)} conditions)",
                            progress=self.cfg.progress)
            stored = {"conditions": names, "clips": ids, "labels": [c.emotion for c in clips],
                      "pred": state["pred"], "answers": state["answers"]}
            f.write_json(stored, "eval", f"{stage}.json")
            f.mark(stage, secs)
            f.drop_checkpoint(f"{stage}.json")
        E = self.split.emotions
        return {c.name: SERResult(c.name, E, stored["labels"], stored["pred"][c.name], stored["answers"][c.name], c)
                for c in conditions}



# ---------------------------------------------------------------------------------------------- the stages
@register_stage("data", produces=["split", "evaluator"])
def stage_data(run: RunContext) -> None:
    from ..evaluate import SEREvaluator

    t0 = time.perf_counter()
    cfg, f = run.cfg, run.folder
    given = run.given_clips
    if given is not None:
        split = restrict_emotions(ClipSplit(list(given.identification), list(given.evaluation), tuple(given.emotions),
                                            dict(given.source)), cfg)
    else:
        split = run.loaded_clips if run.loaded_clips is not None else load_clips(cfg)
    run.split = split
    run.evaluator = SEREvaluator(run.lens, split.emotions, mode=cfg.mode, answer=cfg.answer, seed=cfg.seed,
                                 max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size, num_workers=cfg.workers)
    ids = {"identification": [c.utterance_id for c in split.identification],
           "evaluation": [c.utterance_id for c in split.evaluation]}
    for side, lst in ids.items():
        if len(set(lst)) != len(lst):
            raise InputError(f"{side} clips repeat utterance ids; every clip needs a distinct id")
    if f.done("data"):
        prev = f.read_json("clips.json")
        if prev["emotions"] != list(split.emotions) or prev["ids"] != ids:
            run.split = split = resume_clips(split, prev, ids, f.dir, run.log)
        return
    info = {"emotions": list(split.emotions), "source": split.source, "ids": ids,
            "counts": {"identification": counts(split.identification, split.emotions),
                       "evaluation": counts(split.evaluation, split.emotions)}}
    f.write_json(info, "clips.json")
    run.log(f"[data] {len(split.identification)} identification / {len(split.evaluation)} evaluation clips, "
            f"emotions {list(split.emotions)}")
    f.mark("data", time.perf_counter() - t0)


@register_stage("pool", needs=["split", "evaluator"], produces=["pool_ids"], when=lambda cfg: cfg.discover)
def stage_pool(run: RunContext) -> None:
    from ..evaluate import balanced_pool

    f, split = run.folder, run.split
    if f.done("pool"):
        run.pool_ids = f.read_json("pool.json")["ids"]
        return
    clips = split.identification
    run.log(f"[pool] SER on {len(clips)} identification clips")
    res = run.evaluate("identification", clips, [Condition.baseline()])["baseline"]
    t0 = time.perf_counter()
    pool = balanced_pool(clips, res.correct(), split.emotions, cap=run.cfg.pool_cap, seed=run.cfg.seed,
                         min_per_emotion=1)
    c = counts(pool, split.emotions)
    info = {"ids": [x.utterance_id for x in pool], "counts": c, "accuracy": res.accuracy,
            "per_class": res.per_class(), "unparsed": res.n_unparsed,
            "correct": counts([x for x, ok in zip(clips, res.correct()) if ok], split.emotions)}
    f.write_json(info, "pool.json")
    run.pool_ids = info["ids"]
    run.log(f"[pool] identification accuracy {res.accuracy:.3f}; pool {c}")
    f.mark("pool", time.perf_counter() - t0 + float(f.seconds("identification")))


# the stats, attribution and neurons stages live in their own modules (collect.py, atp.py, sets.py); registered
# here in table order
register_stage("stats", needs=["split", "evaluator", "pool_ids"], produces=["stats"],
               when=lambda cfg: cfg.discover)(stage_stats)
register_stage("attribution", needs=["split", "evaluator", "pool_ids"], produces=["attribution"],
               when=atp_wanted)(stage_attribution)
register_stage("neurons", needs=["split", "pool_ids", "stats", "attribution"], produces=["sets", "sources"])(stage_neurons)
register_stage("top", needs=["split", "evaluator", "pool_ids", "stats", "attribution", "sets", "sources"],
               produces=["pages"], when=top_wanted, after="neurons", before="report")(stage_top)


@register_stage("deactivation", needs=["split", "evaluator", "sets", "stats", "attribution"], produces=["deact"],
                when=lambda cfg: cfg.validate)
def stage_deactivation(run: RunContext) -> None:
    from ..evaluate import deactivation_conditions
    from ..interventions import INTERVENTIONS
    from .extensions import run_context

    # the intervention's options, and the run's products it asks for by keyword (stats, attribution)
    kw = {**run_context(INTERVENTIONS.get(run.cfg.intervention), {"stats": run.stats, "attribution": run.attribution}),
          **run.cfg.intervention_options.get(run.cfg.intervention, {})}
    conds = [Condition.baseline()] + [c for name, ns in run.sets.items() for c in deactivation_conditions(
        ns, kind=run.cfg.intervention, name=name, emotions=run.split.emotions, **kw)]
    if not run.folder.done("deactivation"):
        run.log(f"[deactivation] baseline + {len(conds) - 1} masks on {len(run.split.evaluation)} clips")
    run.deact = run.evaluate("deactivation", run.split.evaluation, conds)


@register_stage("steering", needs=["split", "evaluator", "sets"], produces=["steer"],
                when=lambda cfg: cfg.validate and bool(cfg.alphas))
def stage_steering(run: RunContext) -> None:
    from ..evaluate import steering_conditions

    conds = [Condition.baseline()] + [c for name, ns in run.sets.items() for c in steering_conditions(
        ns, run.cfg.alphas, name=name, emotions=run.split.emotions)]
    if not run.folder.done("steering"):
        run.log(f"[steering] baseline + {len(conds) - 1} steered conditions on {len(run.split.evaluation)} clips")
    run.steer = run.evaluate("steering", run.split.evaluation, conds)


@register_stage("analysis", needs=["split", "sets", "sources", "deact", "steer"], produces=["results"])
def stage_analysis(run: RunContext) -> None:
    from .analysis import analyse

    t0 = time.perf_counter()
    run.results = analyse(run)
    run.folder.write_json(run.results, "results.json")
    prev = run.folder.seconds("analysis")
    run.folder.mark("analysis", prev if prev is not None else time.perf_counter() - t0)


@register_stage("report", needs=["results"])
def stage_report(run: RunContext) -> None:
    t0 = time.perf_counter()
    if run.folder.main:
        from ..report import write_report

        write_report(run.folder.dir, {**run.results, "timing": run.timings(0.0)})
    prev = run.folder.seconds("report")
    run.folder.mark("report", prev if prev is not None else time.perf_counter() - t0)


#: The built-in stages in execution order (a plugin's registered stages join :func:`~esn_lens.run.stage_order`);
#: which of them a run executes depends on ``RunConfig.discover`` / ``.validate``.
STAGE_TABLE: tuple[Stage, ...] = stage_order()
STAGES = tuple(s.name for s in STAGE_TABLE)


def run_pipeline(config: RunConfig, out: str | Path, *, resume: bool = False, lens=None,
                 clips: ClipSplit | None = None, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Execute (or resume) a run in ``out``; returns the results dict (see :mod:`esn_lens.run`)."""
    return Run(out, config, resume=resume, lens=lens, clips=clips, log=log).execute()


__all__ = ["Run", "RunContext", "Stage", "StatsAccumulator", "STAGE_TABLE", "STAGES", "run_pipeline",
           "register_stage", "STAGE_REGISTRY"]
