"""The run's attribution stage: attribution patching (AtP) over the identification pool, for the ``atp`` selector.

One forward and one backward per batch (:func:`esn_lens.attribution.record_attribution`), checkpointed through the run
folder's streaming loop like the statistics, and summed over the ranks under ``torchrun``.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..attribution import AttributionStats, collect_attribution
from ..io import load_tensors, save_tensors

if TYPE_CHECKING:  # pragma: no cover
    from .stages import RunContext

ATTRIBUTION_KIND = "attribution_stats"
FILE = "attribution.safetensors"


def wanted(cfg) -> bool:
    """Whether the run needs attribution (the ``atp`` selector is asked for and the run discovers)."""
    return cfg.discover and "atp" in cfg.selectors


def save_attribution(path: Path, att: AttributionStats, **extra) -> None:
    sd = att.state_dict()
    save_tensors(path, {"sum": sd["sum"], "n_clips": sd["n_clips"]}, ATTRIBUTION_KIND, {"stats": sd["meta"], **extra})


def load_attribution(path: Path) -> tuple[AttributionStats, dict]:
    tensors, meta = load_tensors(path, ATTRIBUTION_KIND)
    return AttributionStats.from_state_dict({"meta": meta["stats"], **tensors}), meta


class AttributionAccumulator:
    """:class:`~esn_lens.attribution.AttributionStats` over clips scored by the run's evaluator (the attribution
    stage's accumulator)."""

    def __init__(self, lens, att: AttributionStats, evaluator, *, batch_size: int):
        self.lens, self.att, self.evaluator, self.batch_size = lens, att, evaluator, batch_size

    def add(self, clips: list) -> None:
        a = self.att
        collect_attribution(self.lens, clips, a.emotions, att=a, evaluator=self.evaluator, site=a.site,
                            positions=a.positions, batch_size=self.batch_size, progress=False)

    def merge(self, other: "AttributionAccumulator") -> None:
        self.att.merge(other.att)

    def state_dict(self) -> dict[str, Any]:
        return self.att.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.att = AttributionStats.from_state_dict(state)

    def empty(self) -> "AttributionAccumulator":
        a = self.att
        return AttributionAccumulator(self.lens, AttributionStats(
            a.emotions, a.n_layers, a.d_mlp, site=a.site, positions=a.positions, model_fingerprint=a.model_fingerprint,
            adapter=a.adapter), self.evaluator, batch_size=self.batch_size)


def stage_attribution(run: "RunContext") -> None:
    f, cfg, lens = run.folder, run.cfg, run.lens
    by_id = {c.utterance_id: c for c in run.split.identification}
    pool = [by_id[i] for i in run.pool_ids]
    acc = AttributionAccumulator(lens, AttributionStats(run.split.emotions, lens.n_layers, lens.d_mlp, site=cfg.site,
                                                        positions=cfg.positions, model_fingerprint=lens.fingerprint,
                                                        adapter=lens.adapter.name),
                                 run.evaluator, batch_size=cfg.batch_size)
    if not f.done("attribution") and not f.path("checkpoints", FILE).exists():
        run.log(f"[attribution] AtP over {len(pool)} pool clips")
    run.accumulate(acc, pool, file=FILE, kind=ATTRIBUTION_KIND, desc="attribution")
    run.attribution = acc.att


__all__ = ["stage_attribution", "wanted", "collect_attribution", "AttributionAccumulator", "save_attribution",
           "load_attribution"]
