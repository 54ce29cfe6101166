"""The ``esn-lens`` command.

::

    esn-lens demo [--out DIR] [--quick]                 # the whole pipeline on the shipped demo model
    esn-lens run      --model M --dataset D --data-dir P --out RUN      # discover + validate + report
    esn-lens discover --model M --dataset D --data-dir P --out RUN      # stats + neuron sets only
    esn-lens validate --model M --dataset D2 --data-dir P2 --neurons RUN/neurons --out RUN2   # transfer
    esn-lens report RUN [--compare OTHER_RUN]
    esn-lens inspect RUN L:N [L:N ...]                  # a unit's summary; writes RUN/neuron_L-N.html
    esn-lens models | esn-lens datasets

Progress goes to stderr, the summary to stdout. Wrong arguments or inputs, OS errors (disk full, read-only
folder) and damaged run files print one line to stderr and
exit with status 2 (no traceback unless ``--debug``); ``--resume`` continues an interrupted run folder.
"""
from __future__ import annotations

import argparse
import errno
import os
import sys
from typing import Sequence

DEMO_OUT = "esn_demo_run"


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


# ---------------------------------------------------------------------------------------------- configs
def demo_config(quick: bool = False, real: bool | str = False):
    """The demo's settings: all paper selectors, constrained word answers, held-out speakers for evaluation.

    ``quick``: a reduced setting for CI (8 identification and 4 evaluation clips per emotion, one alpha).
    ``real``: ``"real"`` (or True): the real-parts model (Whisper tiny.en encoder + SmolLM2-135M, docs/real_model.md)
    on a protocol reduced to fit minutes on a CPU: ConAct and random at r = 1 %, 16 identification and 6 evaluation
    clips per emotion, alpha 2. ``"real-toy"``: the real-decoder demo (SmolLM2-135M frozen behind a toy encoder,
    docs/real_decoder.md): ConAct, AtP and random at 1 %, every identification clip, 12 evaluation clips, alpha 2.
    """
    from .demo_model import DEMO_TOP_FRAC  # the demo's documented budget: 2 % = 20 of 1,024 units per emotion
    from .run import PAPER_SELECTORS, RunConfig

    base = dict(model="demo", dataset="demo", selectors=PAPER_SELECTORS, mode="constrained", answer="word",
                top_frac=DEMO_TOP_FRAC, alphas=(1.0, 2.0, 4.0), batch_size=8, eval_per_emotion=None,
                ident_per_emotion=None, bootstrap=1000)
    if real in (True, "real"):
        base.update(model="real_model", selectors=("conact", "random"), top_frac=0.01, alphas=(2.0,),
                    batch_size=4, eval_per_emotion=6, ident_per_emotion=16, bootstrap=500)
    elif real == "real-toy":
        base.update(model="real_demo", selectors=("conact", "atp", "random"), top_frac=0.01, alphas=(2.0,),
                    batch_size=4, eval_per_emotion=12, ident_per_emotion=None, bootstrap=500)
    if quick:
        base.update(alphas=(2.0,), eval_per_emotion=4, ident_per_emotion=8, bootstrap=200)
    return RunConfig(**base)


#: command-line option (argparse dest) -> RunConfig field, where the names differ
_RENAME = {"selector": "selectors", "alpha": "alphas", "selector_option": "selector_options",
           "intervention_option": "intervention_options"}
_NOT_CONFIG = {"command", "out", "resume", "no_progress", "plugin", "quick", "run_dir", "compare", "debug", "quiet",
               "verbose"}


def config_from_args(args: argparse.Namespace):
    """The RunConfig of a pipeline command: defaults (or the demo's), then every option given."""
    from .run import RunConfig

    cmd = args.command
    if cmd == "demo":
        which = getattr(args, "model", "demo")
        cfg = demo_config(getattr(args, "quick", False), real=False if which == "demo" else which)
    else:
        cfg = RunConfig(model=args.model, dataset=args.dataset, discover=cmd in ("run", "discover"),
                        validate=cmd in ("run", "validate"))
    from .plugins import loaded_plugins
    from .run.extensions import options_dict

    for dest, value in vars(args).items():  # options not given are absent (default=SUPPRESS)
        if dest in ("selector_option", "intervention_option"):
            value = options_dict(value, "--" + dest.replace("_", "-"))
        if dest not in _NOT_CONFIG and not (cmd == "demo" and dest == "model"):
            setattr(cfg, _RENAME.get(dest, dest), value)
    cfg.plugins = tuple(loaded_plugins())
    cfg.progress = not (getattr(args, "no_progress", False) or getattr(args, "quiet", False))
    cfg.__post_init__()
    return cfg


# ---------------------------------------------------------------------------------------------- commands
def _summary(results: dict, out: str) -> str:
    from .report import pretty, pts

    lines = [f"run folder: {out}"]
    if "baseline" in results:
        b = results["baseline"]
        lines.append(f"baseline accuracy {pts(b['accuracy'], False)}% on {b['n']} held-out clips "
                     f"({b['unparsed']} unparsed)")
        lines.append(f"{'selector':<16}{'mean SE':>9}{'mean ACE':>10}{'mean ESS':>10}")
        for name, s in results["selectors"].items():
            d = s.get("deactivation")
            if d:
                lines.append(f"{pretty(name):<16}{pts(d['se_mean']):>9}{pts(d['ace_mean']):>10}{pts(d['ess_mean']):>10}")
    else:
        for name, s in results.get("selectors", {}).items():
            lines.append(f"{pretty(name):<16}{sum(s['counts'].values()):>6} units  "
                         f"neurons/{name}.safetensors")
    t = results.get("timing", {})
    if "total" in t:
        lines.append(f"time: {t['total']:.1f} s (stages), report: {os.path.join(out, 'report.html')}")
    return "\n".join(lines)


def cmd_pipeline(args: argparse.Namespace) -> int:
    from .run import run_pipeline

    cfg = config_from_args(args)
    cfg.check()
    out = getattr(args, "out", None) or (DEMO_OUT if args.command == "demo" else None)
    if out is None:
        raise _Usage("--out RUN_DIR is required")
    results = run_pipeline(cfg, out, resume=getattr(args, "resume", False))
    if os.environ.get("RANK", "0") in ("", "0"):  # under torchrun: rank 0 reports
        print(_summary(results, out))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import write_report

    paths = write_report(args.run_dir, compare=getattr(args, "compare", None))
    print(f"wrote {paths['report.md']} and {paths['report.html']} ({len(paths) - 2} figures)")
    return 0


def _print_registry(registry, header: str, describe) -> int:
    """Print one line per registered name: the name and ``describe(entry)``."""
    width = max([len(header)] + [len(n) for n in registry.names()]) + 2
    print(f"{header:<{width}}what it reads")
    for name in registry.names():
        print(f"{name:<{width}}{describe(registry.get(name))}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from .report_neurons import inspect_units

    for line in inspect_units(args.run_dir, args.units):
        print(line)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from .adapters.support import support_table  # the table of docs/models.md, from the adapter registry

    print(support_table())
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    from .data.loaders import DATASETS

    return _print_registry(DATASETS, "dataset", lambda fn: getattr(fn, "layout", None)
                           or ((fn.__doc__ or "").strip().splitlines() or [""])[0])


class _Usage(Exception):
    pass


#: errno -> what it means for a run (the OS's own wording is kept after it)
_OS_HINTS = {
    errno.ENOSPC: "disk full",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.ENOTDIR: "not a directory",
    errno.EISDIR: "is a directory",
    errno.EDQUOT: "disk quota exceeded",
}


def _one_line(e: BaseException) -> str:
    """One line for an error the CLI reports without a traceback (it names the file where there is one)."""
    from .errors import ESNLensError

    if isinstance(e, OSError) and not isinstance(e, ESNLensError):
        hint = _OS_HINTS.get(e.errno or -1)
        what = e.strerror or str(e) or type(e).__name__
        where = f"{e.filename}: " if e.filename else ""
        if hint and hint.lower() not in what.lower():
            what = f"{hint} ({what})"
        msg = f"{where}{what}"
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            msg += "; free space and continue with --resume"
        return msg
    if isinstance(e, KeyError) and not isinstance(e, ESNLensError) and e.args:
        key = e.args[0]
        return key if isinstance(key, str) and " " in key else f"missing key {key!r}"
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``esn-lens``; returns the exit status (0 ok, 2 bad arguments or inputs)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from .errors import ESNLensError

    from .logs import configure

    configure(quiet=getattr(args, "quiet", False), verbose=getattr(args, "verbose", False))
    try:
        from .plugins import load_entry_point_plugins

        load_entry_point_plugins()  # third-party packages' selectors, interventions, adapters, datasets
        from .plugins import load_plugin

        for mod in getattr(args, "plugin", []) or []:
            load_plugin(mod)  # any error of the module: one line naming the plugin
        if args.command in ("demo", "run", "discover", "validate"):
            return cmd_pipeline(args)
        return {"report": cmd_report, "models": cmd_models, "datasets": cmd_datasets,
                "inspect": cmd_inspect}[args.command](args)
    except (ESNLensError, _Usage, KeyError, OSError) as e:
        if getattr(args, "debug", False):
            raise
        print(f"esn-lens {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"esn-lens {args.command}: interrupted; continue with the same command and --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
