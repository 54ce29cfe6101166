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

from .cli_args import build_parser

DEMO_OUT = "esn_demo_run"


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
