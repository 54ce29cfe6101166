"""The run's top-activations stage: for every unit of the selectors' sets, the top-k (clip, position) entries over
the identification pool and per-emotion histograms (:class:`~esn_lens.topk.TopActivations`) through the run's one
checkpointed accumulate loop (resume, torchrun shares merged -- top-k merge, not sums); then the neuron pages' data
(``neuron_pages.json``) and the top clips' audio (``assets/clips/*.ogg``) that ``report.html`` shows.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch

from ..io import atomic_write_bytes
from ..topk import TopActivations, edges_from_stats
from .accumulate import save_state

if TYPE_CHECKING:  # pragma: no cover
    from .stages import RunContext

TOP_KIND = "top_activations"
FILE = "top_activations.safetensors"
PAGES = "neuron_pages.json"
#: top entries kept per unit in a run
RUN_K = 6


def wanted(cfg) -> bool:
    """The run discovers (it has the pool and statistics the stage reads)."""
    return bool(cfg.discover)


def page_sets(sets: dict[str, Any]) -> dict[str, Any]:
    """The sets whose units get pages: every set but the random baseline."""
    return {n: ns for n, ns in sets.items() if ns.selector != "random" and not n.startswith("random")}


class TopAccumulator:
    """:class:`~esn_lens.topk.TopActivations` over pool clips (global clip index = place in the pool), for
    :func:`~esn_lens.run.accumulate`; ranks' shares are merged by the top-k rule (:meth:`all_reduce`)."""

    def __init__(self, lens: Any, top: TopActivations, index: dict[str, int], prompts: Sequence[str], *,
                 batch_size: int, workers: int | None):
        self.lens, self.top, self.index, self.prompts = lens, top, index, prompts
        self.batch_size, self.workers = batch_size, workers
        self.seen: dict[int, tuple[str, list[int]]] = {}  # the top clips' input positions (not checkpointed: a
        # resumed or sharded run rebuilds the inputs of the clips it did not see)

    def add(self, clips: list) -> None:
        from ..neuron_data import collect_top

        idx = [self.index[c.utterance_id] for c in clips]
        collect_top(self.lens, clips, [self.prompts[i] for i in idx], self.top, batch_size=self.batch_size,
                    indices=idx, num_workers=self.workers, seen=self.seen)

    def merge(self, other: "TopAccumulator") -> None:
        self.top.merge(other.top)
        self.seen.update(other.seen)

    def state_dict(self) -> dict[str, Any]:
        return self.top.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.top.load_state_dict(state)

    def empty(self) -> "TopAccumulator":
        t = self.top
        fresh = TopActivations(t.units, t.emotions, k=t.k, lo=t.lo, hi=t.hi, bins=t.bins, site=t.site,
                               positions_set=t.positions_set, model_fingerprint=t.model_fingerprint)
        return TopAccumulator(self.lens, fresh, self.index, self.prompts, batch_size=self.batch_size,
                              workers=self.workers)

    def all_reduce(self) -> None:
        """Every rank's share merged into this one (the same top-k on every rank)."""
        import torch.distributed as dist

        states: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(states, self.top.state_dict())
        merged = self.empty().top
        for st in states:
            merged.merge(TopActivations.from_state_dict(st))
        self.top = merged


def _scores(run: "RunContext", sets: dict[str, Any]) -> dict[str, torch.Tensor]:
    from ..selectors import score

    out = {}
    for name in sets:
        if run.sources.get(name) == "discovered":
            src = run.attribution if name == "atp" else run.stats
            out[name] = score(src, name, seed=run.cfg.seed)
    return out


def stage_top(run: "RunContext") -> None:
    from ..neuron_data import page_data
    from ..report_neurons import file_sink

    f, cfg, lens = run.folder, run.cfg, run.lens
    run.pages = f.path(PAGES)
    if f.done("top"):
        return
    sets = page_sets(run.sets)
    mask = None
    for ns in sets.values():
        mask = ns.all_units() if mask is None else mask | ns.all_units()
    if mask is None or not bool(mask.any()):
        run.pages = None
        f.mark("top", 0.0)
        return
    by_id = {c.utterance_id: c for c in run.split.identification}
    pool = [by_id[i] for i in run.pool_ids]
    prompts = [run.evaluator.prompt(c).text for c in pool]
    units = mask.nonzero()
    lo, hi = edges_from_stats(run.stats, units)
    top = TopActivations(units, run.split.emotions, k=RUN_K, lo=lo, hi=hi, site=cfg.site, positions_set=cfg.positions,
                         model_fingerprint=lens.fingerprint)
    acc = TopAccumulator(lens, top, {c.utterance_id: i for i, c in enumerate(pool)}, prompts,
                         batch_size=cfg.batch_size, workers=cfg.workers)

    def write(path: Path, acc: TopAccumulator) -> None:  # rank 0, before the stage is marked done
        save_state(path, acc, TOP_KIND, model_fingerprint=lens.fingerprint)
        answers = {}
        if f.path("eval", "identification.json").is_file():
            ev = f.read_json("eval", "identification.json")
            for cid, pred, ans in zip(ev["clips"], ev["pred"]["baseline"], ev["answers"]["baseline"]):
                answers[cid] = {"prediction": pred, "answer": ans}
        data = page_data(lens, acc.top, pool, prompts, scores=_scores(run, sets), sets=sets, answers=answers,
                         audio_sink=file_sink(f.dir), seen=acc.seen)
        atomic_write_bytes(f.path(PAGES), json.dumps(data, separators=(",", ":")).encode())  # compact: many numbers

    if not f.path("checkpoints", FILE).exists():
        run.log(f"[top] top-{RUN_K} activations of {units.shape[0]} set units over {len(pool)} pool clips")
    run.accumulate(acc, pool, file=FILE, kind=TOP_KIND, desc="top activations", write=write)


__all__ = ["stage_top", "wanted", "TopAccumulator", "page_sets", "PAGES", "FILE"]
