"""The ``esn-lens`` command's arguments: the parser, its subcommands and flags, and the value checks of its options
(what :mod:`esn_lens.cli` parses before it runs a command)."""
from __future__ import annotations

import argparse

class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error message (exit 2)."""

    def error(self, message: str):  # noqa: D401
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < v <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1] (0.005 = top 0.5%), got {text}")
    return v


def _int_at_least(minimum: int):
    """An argparse type: an integer >= ``minimum``, refused with one line otherwise."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if v < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {text}")
        return v
    return parse


_positive_int = _int_at_least(1)
_nonnegative_int = _int_at_least(0)


def _optional_int(text: str) -> int | None:
    if text.lower() in ("none", "all"):
        return None
    return _positive_int(text)


def _runtime_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("running")
    g.add_argument("--out", help="run folder (created; must not hold another run)")
    g.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    g.add_argument("--batch-size", type=_positive_int, help="clips per forward pass (default 8)")
    g.add_argument("--checkpoint-every", type=_positive_int,
                   help="write a checkpoint every N batches (default 4)")
    g.add_argument("--threads", type=_positive_int, help="torch CPU threads")
    g.add_argument("--workers", type=_nonnegative_int,
                   help="threads building the next batches while the model runs (default: none with the model on "
                        "the CPU; on a GPU half the cores, at most 4; 0 = build in the loop)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars or stage lines")
    g.add_argument("--quiet", action="store_true", help="warnings and errors only (no stage lines, no progress bars)")
    g.add_argument("--verbose", action="store_true", help="debug lines too")
    g.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                   help="import a module first (registers your selectors, datasets, adapters); repeatable")


def _run_args(p: argparse.ArgumentParser, *, discover: bool, validate: bool) -> None:
    from .run.config import UNITS, UNITS_HELP
    g = p.add_argument_group("model")
    g.add_argument("--model", required=True, help="hub id or local save_pretrained folder ('demo' = the shipped demo)")
    g.add_argument("--dtype", help="e.g. bfloat16, float16, float32")
    g.add_argument("--device", help="e.g. cuda, cuda:1, cpu")
    g.add_argument("--device-map", help="e.g. auto (spread a large model over GPUs)")
    g.add_argument("--trust-remote-code", action="store_true",
                   help="let transformers run the checkpoint's own Python code (e.g. Kimi-Audio); off by default, "
                        "recorded in config.json")
    g.add_argument("--units", choices=UNITS, help=UNITS_HELP)
    g = p.add_argument_group("data")
    g.add_argument("--dataset", required=True, help="a dataset loader (see `esn-lens datasets`), or 'demo'")
    g.add_argument("--data-dir", help="the corpus folder")
    g.add_argument("--label-set", help="label set name (e.g. iemocap4) or 'all'")
    g.add_argument("--on-bad-clip", choices=("skip", "fail"),
                   help="a clip whose audio is missing, unreadable, empty or NaN: skip it (default; named in "
                        "results.json and the report) or refuse the run")
    g.add_argument("--on-duplicate", choices=("warn", "fail"),
                   help="rows repeating an utterance id: keep the first and say so (default), or refuse the run")
    g.add_argument("--eval-fraction", type=float, help="share of speakers held out for evaluation (0.5)")
    g.add_argument("--eval-per-emotion", type=_optional_int, help="evaluation clips per emotion (200)")
    if discover:
        g.add_argument("--ident-per-emotion", type=_optional_int,
                       help="cap identification clips per emotion (default: all)")
        g.add_argument("--pool-cap", type=_optional_int, help="cap the pool per emotion")
    else:
        g.add_argument("--eval-split", choices=("eval", "all"),
                       help="evaluate on the held-out speakers (eval) or on every clip (all)")
    g = p.add_argument_group("method")
    if discover:
        g.add_argument("--selector", action="append", metavar="NAME",
                       help="selector (repeatable; default lap, lape, mad, conact, random)")
        g.add_argument("--selector-option", action="append", metavar="NAME.KEY=VALUE",
                       help="an option of a selector, e.g. lape.filter_percentile=95 (repeatable; part of the run's "
                            "identity)")
        g.add_argument("--top-frac", type=_fraction, help="budget r per emotion (default 0.005)")
        g.add_argument("--site", choices=("pre", "act", "post"), help="MLP site (default act)")
        g.add_argument("--positions", choices=("valid", "audio", "no_prompt", "last"),
                       help="token positions counted in the statistics (default valid)")
    if validate:
        g.add_argument("--neurons", action="append", metavar="FILE",
                       help="a NeuronSet file, or a folder of them (e.g. another run's neurons/): cross-dataset "
                            "transfer; repeatable")
        g.add_argument("--allow-other-model", action="store_true",
                       help="accept --neurons files found on another model (another fingerprint: e.g. the base model "
                            "of a fine-tune); recorded in results.json")
        g.add_argument("--alpha", action="append", type=float,
                       help="steering alpha, gain 1 + alpha (repeatable; default 0.5 1 2)")
        g.add_argument("--bootstrap", type=int, help="bootstrap resamples for intervals (1000; 0 = off)")
        g.add_argument("--intervention", metavar="NAME",
                       help="registered intervention applied to each emotion's units in the deactivation stage "
                            "(default deactivate; also mean_ablate, or your own registered by a --plugin module)")
        g.add_argument("--intervention-option", action="append", metavar="NAME.KEY=VALUE",
                       help="an option of the intervention, e.g. clamp.limit=0.5 (repeatable; part of the run's identity)")
    g.add_argument("--mode", choices=("generate", "constrained"),
                   help="SER answers: generated and parsed (the paper's protocol, default) or constrained scoring")
    g.add_argument("--answer", choices=("digit", "word"), help="constrained options: digits or words")
    g.add_argument("--max-new-tokens", type=_positive_int, help="generation length (20)")
    g.add_argument("--seed", type=int, help="seed of splits, option order, random selector (0)")


def _suppressing(add_parser):
    """Sub-parsers whose options are absent from the namespace unless given (so defaults live in RunConfig)."""
    def add(*a, **kw):
        kw.setdefault("argument_default", argparse.SUPPRESS)
        return add_parser(*a, **kw)
    return add


def _with_debug(add_parser):
    """Every sub-command takes ``--debug`` (a full traceback instead of the one-line error)."""
    def add(*a, **kw):
        sp = add_parser(*a, **kw)
        sp.add_argument("--debug", action="store_true", help="show the full traceback of an error")
        return sp
    return add


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .run.config import UNITS, UNITS_HELP

    p = _Parser(prog="esn-lens", argument_default=argparse.SUPPRESS,
                description="Find and causally validate emotion-sensitive neurons (ESNs) in audio-language models.")
    p.add_argument("--version", action="version", version=f"esn-lens {__version__}")
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.add_parser = _with_debug(_suppressing(sub.add_parser))
    sub.required = True

    d = sub.add_parser("demo", help="run the whole pipeline on the shipped demo model and clips")
    d.add_argument("--quick", action="store_true", help="a reduced setting (fewer clips and alphas), for CI")
    d.add_argument("--model", choices=("demo", "real", "real-toy"),
                   help="'demo' (default): the model trained here; 'real': real pretrained parts, Whisper tiny.en's "
                        "encoder + SmolLM2-135M, both frozen, only the projector trained (docs/real_model.md); "
                        "'real-toy': SmolLM2-135M behind an audio encoder trained here (docs/real_decoder.md). Both "
                        "need the real-demo parts and run a reduced protocol (minutes on 2 CPU cores)")
    d.add_argument("--device", help="e.g. cuda, cuda:1, cpu")
    d.add_argument("--dtype", help="e.g. bfloat16, float16, float32")
    d.add_argument("--units", choices=UNITS, help=UNITS_HELP)
    _runtime_args(d)

    r = sub.add_parser("run", help="discover, validate and report in one run folder")
    _run_args(r, discover=True, validate=True)
    _runtime_args(r)
    di = sub.add_parser("discover", help="identification pool, neuron statistics and neuron sets (no interventions)")
    _run_args(di, discover=True, validate=False)
    _runtime_args(di)
    v = sub.add_parser("validate", help="deactivate and steer given neuron sets on a corpus (e.g. another one)")
    _run_args(v, discover=False, validate=True)
    _runtime_args(v)

    rep = sub.add_parser("report", help="(re)write figures, report.md and report.html of a run folder")
    rep.add_argument("run_dir", metavar="RUN_DIR")
    rep.add_argument("--compare", metavar="OTHER_RUN",
                     help="add the cross-dataset overlap with another run's neuron sets")
    ins = sub.add_parser("inspect", help="print units' summaries (scores, sets, top clips) and write their pages")
    ins.add_argument("run_dir", metavar="RUN_DIR")
    ins.add_argument("units", metavar="L:N", nargs="+", help="units as LAYER:NEURON, e.g. 3:117")
    models = sub.add_parser("models", help="list the model adapters")
    datasets = sub.add_parser("datasets", help="list the dataset loaders")
    for sp in (rep, ins, models, datasets):  # every subcommand takes --plugin (the pipeline ones in _runtime_args)
        sp.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                        help="import a module first (registers selectors, interventions, adapters, datasets, report "
                             "sections); repeatable")
    return p
