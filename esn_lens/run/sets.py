"""The run's neuron sets: discovered by each selector, read from files found elsewhere (transferred), and the
random baseline with a transferred set's budget."""
from __future__ import annotations

import re
from pathlib import Path
import time
from typing import TYPE_CHECKING, Any, Sequence

import torch

from ..errors import IncompatibleError, InputError

if TYPE_CHECKING:  # pragma: no cover
    from .stages import RunContext


def safe_name(name: str) -> str:
    """A neuron set's name as a file name."""
    return re.sub(r"[^A-Za-z0-9_.@+-]", "_", name)


def corpus_tag(dataset: str, data_dir: str | None) -> str:
    """A short name of the identification corpus (names transferred sets, e.g. ``mad@iemocap``)."""
    if dataset in ("manifest", "hf") and data_dir:
        return Path(data_dir).expanduser().resolve().name
    return dataset


def neuron_files(paths: Sequence[str]) -> list[Path]:
    """The NeuronSet files named by ``paths`` (files, or folders of ``*.safetensors``)."""
    files: list[Path] = []
    for p in paths:
        p = Path(p).expanduser()
        found = sorted(p.glob("*.safetensors")) if p.is_dir() else [p]
        if not found:
            raise InputError(f"no neuron files (*.safetensors) in {p}")
        files.extend(found)
    return files


def load_transfer(paths: Sequence[str], lens, emotions: Sequence[str], taken: Sequence[str],
                  allow_other_model: bool = False, warnings: dict[str, Any] | None = None) -> dict[str, tuple[Any, str]]:
    """NeuronSets from files (or folders of them) made elsewhere, named ``<selector>@<corpus>``: name -> (set, file).

    A set found on another model (another fingerprint, see :mod:`esn_lens.identity`) is refused unless
    ``allow_other_model``; then it is used, said on stderr and recorded (``warnings``, its source)."""
    from ..neurons import NeuronSet
    from .notices import warn

    out: dict[str, tuple[Any, str]] = {}
    for f in neuron_files(paths):
        ns = NeuronSet.load(f)
        other = ns.model_fingerprint != lens.fingerprint
        if other and not allow_other_model:
            raise IncompatibleError(f"{f}: neuron set was selected on model {ns.model_fingerprint!r}, not this model "
                                    f"{lens.fingerprint!r} (another checkpoint or a fine-tuned copy); pass "
                                    "--allow-other-model to validate it on this model anyway")
        if other:
            warn(warnings if warnings is not None else {}, f"{f}: neuron set from another model "
                 f"({ns.model_fingerprint!r}, this model {lens.fingerprint!r}) used as asked (--allow-other-model)")
        if (ns.n_layers, ns.d_mlp) != (lens.n_layers, lens.d_mlp):
            raise IncompatibleError(f"{f}: neuron set is for {ns.n_layers}x{ns.d_mlp} units, the model has "
                                    f"{lens.n_layers}x{lens.d_mlp}")
        shared = [e for e in emotions if e in ns.emotions]
        if len(shared) < 2:
            raise InputError(f"{f}: its emotions {list(ns.emotions)} share fewer than 2 with the run's {list(emotions)}")
        tag = ns.meta.get("corpus") or f.parent.parent.name or f.stem
        name = f"{ns.selector}@{tag}"
        base, k = name, 2
        while name in out or name in taken:
            name, k = f"{base}#{k}", k + 1
        out[name] = (ns, str(f) + (f" (another model {ns.model_fingerprint}: --allow-other-model)" if other else ""))
    return out


def pool_identity(run: "Run") -> dict[str, list[str]]:
    """The discovery pool's clip ids and audio hashes (kept in each neuron file, to spot a validation corpus that
    overlaps it)."""
    from ..data.clip import audio_hash

    by_id = {c.utterance_id: c for c in run.split.identification}
    ids = [i for i in run.pool_ids if i in by_id]
    hashes = [by_id[i].content_hash or audio_hash(by_id[i].load(16000)[0]) for i in ids]
    return {"ids": ids, "audio": hashes}


def check_pool_overlap(split: Any, paths: Sequence[str]) -> None:
    """Warn (stderr, clips.json, results.json, report) when evaluation clips were in the pool a neuron file was
    selected on: the same id, or the same audio (content hash) under another id."""
    from ..neurons import NeuronSet
    from .notices import warn

    ev_ids = {c.utterance_id for c in split.evaluation}
    ev_hash = {c.content_hash: c.utterance_id for c in split.evaluation if c.content_hash}
    found: dict[str, list[str]] = {}
    for f in neuron_files(paths):
        pool = NeuronSet.load(f).meta.get("pool") or {}
        if not isinstance(pool, dict):
            continue
        same = ev_ids & set(pool.get("ids") or []) | {ev_hash[h] for h in set(pool.get("audio") or []) if h in ev_hash}
        if same:
            found[str(f)] = sorted(same)
            warn(split.source, f"{len(same)} of {len(ev_ids)} evaluation clips were in the discovery pool of {f} "
                 f"(same id or same audio: {', '.join(sorted(same)[:5])}{' ...' if len(same) > 5 else ''}); "
                 "their results are not held out")
    if found:
        split.source["pool_overlap"] = found


def random_like(ns, emotions: Sequence[str], seed: int = 0):
    """Random units with the same per-emotion budget as ``ns`` (the random baseline of a transferred set)."""
    from ..neurons import NeuronSet

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



def stage_neurons(run: "RunContext") -> None:
    """Select with every selector (and read transferred sets); a resumed run reads its own saved copies."""
    from ..neurons import NeuronSet
    from ..selectors import SELECTORS, find_neurons
    from .extensions import run_context

    f, cfg = run.folder, run.cfg
    t0 = time.perf_counter()
    if f.done("neurons"):
        info = f.progress["stages"]["neurons"]
        run.sets = {n: NeuronSet.load(f.path("neurons", f"{safe_name(n)}.safetensors"),
                                      expect_fingerprint=run.lens.fingerprint) for n in info["names"]}
        run.sources = dict(info["sources"])
        return
    run.sets, run.sources = {}, {}
    if cfg.discover:
        pool = pool_identity(run)
        for sel in cfg.selectors:
            source = run.attribution if sel == "atp" else run.stats
            # the selector's options, and the run's products it asks for by keyword (stats, attribution)
            extra = {**run_context(SELECTORS.get(sel), {"stats": run.stats, "attribution": run.attribution},
                                   skip_first=True), **cfg.selector_options.get(sel, {})}
            run.sets[sel] = find_neurons(source, sel, top_frac=float(cfg.top_frac), seed=cfg.seed,
                                         meta={"corpus": corpus_tag(cfg.dataset, cfg.data_dir), "model": cfg.model,
                                               "run": f.dir.name, "pool": pool}, **extra)
            run.sources[sel] = "discovered"
    transferred = load_transfer(cfg.neurons, run.lens, run.split.emotions, list(run.sets),
                                allow_other_model=cfg.allow_other_model, warnings=run.split.source)
    for name, (ns, src) in transferred.items():
        run.sets[name], run.sources[name] = ns, src
    if cfg.validate and transferred and "random" not in run.sets:
        first = next(iter(transferred))
        run.sets["random"] = random_like(transferred[first][0], run.split.emotions, seed=cfg.seed)
        run.sources["random"] = f"random units, same budget as {first}"
    names = [safe_name(n) for n in run.sets]
    if len(set(names)) != len(names):
        raise InputError(f"neuron set names {list(run.sets)} collide as file names")
    if f.main:
        for name, ns in run.sets.items():
            ns.save(f.path("neurons", f"{safe_name(name)}.safetensors"))
    run.log(f"[neurons] {', '.join(f'{n}: {sum(ns.counts.values())}' for n, ns in run.sets.items())} units")
    f.mark("neurons", time.perf_counter() - t0, names=list(run.sets), sources=run.sources)


__all__ = ["stage_neurons", "safe_name", "corpus_tag", "load_transfer", "random_like", "neuron_files", "pool_identity",
           "check_pool_overlap"]
