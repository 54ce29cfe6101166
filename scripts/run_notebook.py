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


def _figures() -> list[dict]:
    if "matplotlib" not in sys.modules:
        return []
    import matplotlib.pyplot as plt

    outs = []
    for num in plt.get_fignums():
        buf = io.BytesIO()
        plt.figure(num).savefig(buf, format="png", dpi=80, bbox_inches="tight")
        outs.append(nbformat.v4.new_output("display_data", data={"image/png": base64.b64encode(buf.getvalue()).decode()}))
    plt.close("all")
    return outs


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
            with contextlib.redirect_stdout(out):
                exec(compile(cell.source, f"{script.name}[cell {count}]", "exec"), ns)
            cell.execution_count = count
            cell.outputs = ([nbformat.v4.new_output("stream", name="stdout", text=out.getvalue())] if out.getvalue() else [])
            cell.outputs += _figures()
    finally:
        sys.argv = old_argv
    nb.metadata.pop("jupytext", None)  # the notebook is a build product of the script
    return nb


def main(args: list[str]) -> int:
    if args and args[0] == "--all":
        NOTEBOOKS.mkdir(exist_ok=True)
        for script in sorted(TUTORIALS.glob("*.py")):
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
