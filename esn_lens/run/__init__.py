"""discover -> validate -> analyse as one resumable run with a run folder.

A run reads labelled clips, keeps those the un-edited model answers correctly (the identification pool),
accumulates :class:`~esn_lens.stats.NeuronStats` over them, selects neurons with every requested selector,
deactivates and steers each selection on held-out clips, and analyses the result::

    from esn_lens.run import RunConfig, run_pipeline
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

Every file is written atomically; a stage is marked done in ``progress.json`` only after its output is complete.
Statistics and every evaluation stage stream through one checkpointed loop (:meth:`RunFolder.stream`), which
checkpoints every ``checkpoint_every`` batches, so a killed run resumes from the last checkpoint and gives results
identical to an uninterrupted run. A run folder (or checkpoint) made with another model or configuration is
refused. Under ``torchrun --nproc_per_node N`` the statistics and evaluations are split over the ranks and rank 0
writes the folder, with the same results as one process.

Modules: :mod:`.config` (RunConfig and its checks), :mod:`.data` (clips, splits, model loading), :mod:`.folder`
(run folder, lock, progress, the streaming loop), :mod:`.registry` (``register_stage``, the products context),
:mod:`.accumulate` (the checkpointed accumulate loop of streaming statistics stages), :mod:`.stages` (the built-in
stages and :class:`Run`), :mod:`.sets`
(transferred sets, random baseline), :mod:`.analysis` (results from :mod:`esn_lens.metrics`), :mod:`.parallel`
(torch.distributed).
"""
from ..io import load_results, read_run_json
from .analysis import analyse, layer_analysis
from .config import PAPER_SELECTORS, RunConfig, check_model_arg, normalise_model
from .data import ClipSplit, load_clips, load_lens, screen_clips, weights_digest
from .folder import CHECKPOINT_HOOKS, LOCK_NAME, RESULTS_VERSION, RunError, RunFolder, digest
from .sets import random_like
from .accumulate import Accumulator, accumulate
from .registry import (STAGE_REGISTRY, Stage, StageContext, StageError, product_names, register_stage, stage_names,
                       stage_order, unregister_stage)
from .stages import STAGE_TABLE, STAGES, Run, RunContext, run_pipeline

__all__ = ["RunConfig", "ClipSplit", "Run", "RunError", "RunFolder", "Stage", "run_pipeline", "load_results",
           "load_clips", "load_lens", "screen_clips", "random_like", "analyse", "layer_analysis", "weights_digest",
           "normalise_model", "check_model_arg", "read_run_json", "digest", "PAPER_SELECTORS", "STAGES",
           "STAGE_TABLE", "CHECKPOINT_HOOKS", "LOCK_NAME", "RESULTS_VERSION", "register_stage", "unregister_stage",
           "stage_order", "stage_names", "product_names", "STAGE_REGISTRY", "StageContext", "StageError", "RunContext",
           "Accumulator", "accumulate"]
