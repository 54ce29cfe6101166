"""Execute a tutorial (a jupytext percent script) cell by cell and write it as a notebook with its outputs.

    python scripts/run_notebook.py tutorials/01_quickstart.py tutorials/notebooks/01_quickstart.ipynb [-- ARGS]

Each code cell runs in one shared namespace (as in a kernel); its printed text becomes the cell's stream
output and every matplotlib figure open at the end of the cell becomes a PNG output (then closed). A failing
cell stops the run with its traceback (exit 1): the notebook is only written when every cell ran.
``tests/test_tutorials.py`` runs every tutorial through this, so the shipped notebooks (`tutorials/notebooks/`,
rebuilt with ``python scripts/run_notebook.py --all``) cannot drift from code that runs.
Needs only jupytext and nbformat (the dev extra), no Jupyter kernel.
"""
from __future__ import annotations

import base64
import contextlib
import io
import linecache
import os
import sys
from pathlib import Path

import jupytext
import nbformat

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "tutorials"
NOTEBOOKS = TUTORIALS / "notebooks"
#: tutorial -> argv it runs with when built (05 in its check-only mode: no GPU, no 7B model)
ARGV = {"05_paper_setup_gpu": ["--check"]}


def _png(fig) -> dict:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    return nbformat.v4.new_output("display_data", data={"image/png": base64.b64encode(buf.getvalue()).decode()})


def _figures(ns: dict, before: set[int]) -> list[dict]:
    """PNG outputs of the figures a cell made: those still open, and those it bound to a name (saved and closed)."""
    if "matplotlib" not in sys.modules:
        return []
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    figs = [plt.figure(num) for num in plt.get_fignums()]
    figs += [v for v in ns.values() if isinstance(v, Figure) and id(v) not in before and all(v is not f for f in figs)]
    plt.close("all")
    return [_png(f) for f in figs]


def _bound_figures(ns: dict) -> set[int]:
    if "matplotlib" not in sys.modules:
        return set()
    from matplotlib.figure import Figure

    return {id(v) for v in ns.values() if isinstance(v, Figure)}


def execute(script: Path, argv: list[str] | None = None) -> nbformat.NotebookNode:
    """The notebook of ``script`` with every code cell executed and its outputs attached."""
    nb = jupytext.read(script)
    ns: dict = {"__name__": "__main__"}
    old_argv = sys.argv
    sys.argv = [str(script), *(argv or [])]
    try:
        count = 0
        for cell in nb.cells:
            if cell.cell_type != "code":
                continue
            count += 1
            out = io.StringIO()
            fname = f"<{script.stem} cell {count}>"
            # nnsight reads a trace's `with` block back from its source: register the cell's text like a kernel does
            linecache.cache[fname] = (len(cell.source), None, cell.source.splitlines(True), fname)
            stopped, before = False, _bound_figures(ns)
            try:
                with contextlib.redirect_stdout(out):
                    exec(compile(cell.source, fname, "exec"), ns)
            except SystemExit as e:  # the script ends itself here (05's check-only mode): keep what ran
                if e.code not in (None, 0):
                    raise
                stopped = True
            cell.execution_count = count
            cell.outputs = ([nbformat.v4.new_output("stream", name="stdout", text=out.getvalue())] if out.getvalue() else [])
            cell.outputs += _figures(ns, before)
            if stopped:
                nb.metadata["esn_lens_stopped_at_cell"] = count  # later cells: not run in this mode
                break
    finally:
        sys.argv = old_argv
    nb.metadata.pop("jupytext", None)  # the notebook is a build product of the script
    return nb


def main(args: list[str]) -> int:
    if args and args[0] == "--all":
        NOTEBOOKS.mkdir(exist_ok=True)
        for script in sorted(TUTORIALS.glob("*.py")):
            if args[1:] and script.stem not in args[1:]:  # --all NAME ...: only those
                continue
            import subprocess

            subprocess.run([sys.executable, __file__, str(script), str(NOTEBOOKS / f"{script.stem}.ipynb")], check=True,
                           env=dict(os.environ, MPLBACKEND="Agg"))
        return 0
    script, dest = Path(args[0]), Path(args[1])
    extra = args[3:] if len(args) > 2 and args[2] == "--" else ARGV.get(script.stem, [])
    os.environ.setdefault("MPLBACKEND", "Agg")
    nb = execute(script, extra)
    dest.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, dest)
    print(f"wrote {dest}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
