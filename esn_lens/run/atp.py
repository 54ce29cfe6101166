"""The run's attribution stage: attribution patching (AtP) over the identification pool, for the ``atp`` selector.

One forward and one backward per batch (:func:`esn_lens.attribution.record_attribution`), checkpointed through the run
folder's streaming loop like the statistics, and summed over the ranks under ``torchrun``.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..attribution import AttributionStats, collect_attribution
from ..io import load_tensors, save_tensors

if TYPE_CHECKING:  # pragma: no cover
    from .stages import Run

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


def stage_attribution(run: "Run") -> None:
    f, cfg, lens = run.folder, run.cfg, run.lens
    if f.done("attribution"):
        att, meta = load_attribution(f.path(FILE))
        f.check_checkpoint(f.path(FILE), meta.get("model_fingerprint") == lens.fingerprint, "")
        run.attribution = att
        return
    by_id = {c.utterance_id: c for c in run.split.identification}
    pool = [by_id[i] for i in run.pool_ids]
    holder = {"att": AttributionStats(run.split.emotions, lens.n_layers, lens.d_mlp, site=cfg.site,
                                      positions=cfg.positions, model_fingerprint=lens.fingerprint,
                                      adapter=lens.adapter.name)}

    def load(ckpt: Path) -> tuple[int, float]:
        att, meta = load_attribution(ckpt)
        f.check_checkpoint(ckpt, meta.get("key") == f.key and meta.get("model_fingerprint") == lens.fingerprint, "")
        holder["att"] = att
        return int(meta["consumed"]), float(meta.get("elapsed", 0.0))

    def save(ckpt: Path, consumed: int, elapsed: float) -> None:
        save_attribution(ckpt, holder["att"], consumed=consumed, elapsed=elapsed, key=f.key,
                         model_fingerprint=lens.fingerprint)

    def work(chunk: list) -> None:
        run.par.collect_attribution(lens, chunk, run.evaluator, holder["att"], batch_size=cfg.batch_size)

    if not f.path("checkpoints", FILE).exists():
        run.log(f"[attribution] AtP over {len(pool)} pool clips")
    secs = f.stream("attribution", pool, cfg.batch_size * cfg.checkpoint_every, work=work, save=save, load=load,
                    checkpoint=FILE, desc="attribution", progress=cfg.progress)
    run.attribution = holder["att"]
    if f.main:
        save_attribution(f.path(FILE), run.attribution, model_fingerprint=lens.fingerprint)
    f.mark("attribution", secs)
    f.drop_checkpoint(FILE)


__all__ = ["stage_attribution", "wanted", "collect_attribution"]
