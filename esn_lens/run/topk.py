"""The run's top-activations stage: for every unit of the selectors' sets, the top-k (clip, position) entries over
the identification pool and per-emotion histograms (:class:`~esn_lens.topk.TopActivations`), checkpointed through
the run folder's streaming loop, merged over ranks under ``torchrun``; then the neuron pages' data
(``neuron_pages.json``) and the top clips' audio (``assets/clips/*.ogg``) that ``report.html`` shows.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..io import atomic_write_bytes, load_tensors, save_tensors
from ..topk import TENSORS, TopActivations, edges_from_stats

if TYPE_CHECKING:  # pragma: no cover
    from .stages import Run

TOP_KIND = "top_activations"
FILE = "top_activations.safetensors"
PAGES = "neuron_pages.json"
#: top entries kept per unit in a run
RUN_K = 6


def wanted(cfg) -> bool:
    """The run discovers (it has the pool and statistics the stage reads)."""
    return bool(cfg.discover)


def page_sets(run: "Run") -> dict[str, Any]:
    """The sets whose units get pages: every set but the random baseline."""
    return {n: ns for n, ns in run.sets.items() if ns.selector != "random" and not n.startswith("random")}


def save_top(path: Path, top: TopActivations, **extra: Any) -> None:
    sd = top.state_dict()
    save_tensors(path, {n: sd[n] for n in TENSORS}, TOP_KIND, {"top": sd["meta"], **extra})


def load_top(path: Path) -> tuple[TopActivations, dict]:
    tensors, meta = load_tensors(path, TOP_KIND)
    return TopActivations.from_state_dict({"meta": meta["top"], **tensors}), meta


def _gather(run: "Run", local: TopActivations, into: TopActivations) -> None:
    """Merge every rank's state into ``into`` (the same result on every rank)."""
    import torch.distributed as dist

    states: list[Any] = [None] * run.par.info.world_size
    dist.all_gather_object(states, local.state_dict())
    for st in states:
        into.merge(TopActivations.from_state_dict(st))


def _scores(run: "Run") -> dict[str, torch.Tensor]:
    from ..selectors import score

    out = {}
    for name in page_sets(run):
        if run.sources.get(name) == "discovered":
            src = run.attribution if name == "atp" else run.stats
            out[name] = score(src, name, seed=run.cfg.seed)
    return out


def stage_top(run: "Run") -> None:
    from ..neuron_data import collect_top, page_data
    from ..report_neurons import file_sink

    f, cfg, lens = run.folder, run.cfg, run.lens
    if f.done("top"):
        run.pages = f.path(PAGES)
        return
    sets = page_sets(run)
    by_id = {c.utterance_id: c for c in run.split.identification}
    pool = [by_id[i] for i in run.pool_ids]
    prompts = [run.evaluator.prompt(c).text for c in pool]
    mask = None
    for ns in sets.values():
        m = ns.all_units()
        mask = m if mask is None else mask | m
    if mask is None or not bool(mask.any()):
        f.mark("top", 0.0)
        return
    units = mask.nonzero()
    lo, hi = edges_from_stats(run.stats, units)

    def new() -> TopActivations:
        return TopActivations(units, run.split.emotions, k=RUN_K, lo=lo, hi=hi, site=cfg.site,
                              positions_set=cfg.positions, model_fingerprint=lens.fingerprint)

    holder = {"top": new(), "consumed": 0}

    def load(ckpt: Path) -> tuple[int, float]:
        top, meta = load_top(ckpt)
        f.check_checkpoint(ckpt, meta.get("key") == f.key and meta.get("model_fingerprint") == lens.fingerprint)
        holder["top"] = holder["top"].load_state_dict(top.state_dict())
        holder["consumed"] = int(meta["consumed"])
        return int(meta["consumed"]), float(meta.get("elapsed", 0.0))

    def save(ckpt: Path, consumed: int, elapsed: float) -> None:
        save_top(ckpt, holder["top"], consumed=consumed, elapsed=elapsed, key=f.key, model_fingerprint=lens.fingerprint)

    def work(chunk: list) -> None:
        first = holder["consumed"]
        cp = prompts[first:first + len(chunk)]
        if not run.par.distributed:
            collect_top(lens, chunk, cp, holder["top"], batch_size=cfg.batch_size, first=first, num_workers=cfg.workers)
        else:
            from ..distributed import run_agreed, shard_indices

            local = new()
            mine = shard_indices(len(chunk), run.par.info.rank, run.par.info.world_size)
            run_agreed(lambda: mine and collect_top(lens, [chunk[i] for i in mine], [cp[i] for i in mine], local,
                                                    batch_size=cfg.batch_size, indices=[first + i for i in mine],
                                                    num_workers=cfg.workers),
                       what="top activations")
            _gather(run, local, holder["top"])
        holder["consumed"] = first + len(chunk)

    if not f.path("checkpoints", FILE).exists():
        run.log(f"[top] top-{RUN_K} activations of {units.shape[0]} set units over {len(pool)} pool clips")
    secs = f.stream("top", pool, cfg.batch_size * cfg.checkpoint_every, work=work, save=save, load=load,
                    checkpoint=FILE, desc="top activations", progress=cfg.progress)
    t0 = time.perf_counter()
    if f.main:
        save_top(f.path(FILE), holder["top"], model_fingerprint=lens.fingerprint)
        answers = {}
        if f.path("eval", "identification.json").is_file():
            ev = f.read_json("eval", "identification.json")
            for cid, pred, ans in zip(ev["clips"], ev["pred"]["baseline"], ev["answers"]["baseline"]):
                answers[cid] = {"prediction": pred, "answer": ans}
        data = page_data(lens, holder["top"], pool, prompts, scores=_scores(run), sets=sets, answers=answers,
                         audio_sink=file_sink(f.dir))
        atomic_write_bytes(f.path(PAGES), json.dumps(data, separators=(",", ":")).encode())  # compact: MBs of numbers
    f.mark("top", secs + time.perf_counter() - t0)
    f.drop_checkpoint(FILE)
    run.pages = f.path(PAGES)


__all__ = ["stage_top", "wanted", "load_top", "save_top", "PAGES", "FILE"]
