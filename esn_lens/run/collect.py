"""The run's statistics stage: :class:`~esn_lens.stats.NeuronStats` over the identification pool, streamed through
:func:`~esn_lens.run.accumulate` (checkpoints, resume, torchrun sums) with :class:`StatsAccumulator`."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .stages import RunContext

STATS_CHECKPOINT_KIND = "stats_checkpoint"


class StatsAccumulator:
    """:class:`~esn_lens.stats.NeuronStats` over clips, each with its own prompt (the stats stage's accumulator)."""

    def __init__(self, lens, stats, prompts: dict[str, str], *, batch_size: int, num_workers: int | None):
        self.lens, self.stats, self.prompts = lens, stats, prompts
        self.kw = dict(batch_size=batch_size, num_workers=num_workers)

    def add(self, clips: list) -> None:
        s = self.stats
        self.lens.collect_stats(clips, [self.prompts[c.utterance_id] for c in clips], s.emotions, stats=s,
                                site=s.site, positions=s.positions, progress=False, **self.kw)

    def merge(self, other: "StatsAccumulator") -> None:
        self.stats.merge(other.stats)

    def state_dict(self) -> dict[str, Any]:
        return self.stats.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stats.load_state_dict(state)

    def empty(self) -> "StatsAccumulator":
        s = self.stats
        return StatsAccumulator(self.lens, self.lens.new_stats(s.emotions, s.site, s.positions), self.prompts,
                                **self.kw)

    def all_reduce(self) -> None:
        from ..distributed import all_reduce_stats

        all_reduce_stats(self.stats)


def stage_stats(run: "RunContext") -> None:
    from ..stats import NeuronStats

    f, cfg, lens = run.folder, run.cfg, run.lens
    by_id = {c.utterance_id: c for c in run.split.identification}
    pool = [by_id[i] for i in run.pool_ids]
    prompts = {c.utterance_id: run.evaluator.prompt(c).text for c in pool}
    acc = StatsAccumulator(lens, lens.new_stats(run.split.emotions, cfg.site, cfg.positions), prompts,
                           batch_size=cfg.batch_size, num_workers=cfg.workers)
    if not f.done("stats") and not f.path("checkpoints", "stats.safetensors").exists():
        run.log(f"[stats] {cfg.site} statistics over {len(pool)} pool clips")
    run.accumulate(acc, pool, file="stats.safetensors", kind=STATS_CHECKPOINT_KIND, desc="collect stats",
                   write=lambda path, a: a.stats.save(path),
                   read=lambda path: NeuronStats.load(path, expect_fingerprint=lens.fingerprint).state_dict())
    run.stats = acc.stats


__all__ = ["StatsAccumulator", "stage_stats", "STATS_CHECKPOINT_KIND"]
