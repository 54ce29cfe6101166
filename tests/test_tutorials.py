"""Every tutorial runs as a notebook (cell by cell, outputs attached: ``scripts/run_notebook.py``; 05 in its
check-only mode), checks its own values, and is a valid jupytext percent notebook; the shipped notebooks with
outputs (``tutorials/notebooks``) hold exactly the scripts' cells."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import nbformat

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"
NOTEBOOKS = TUTORIALS / "notebooks"
RUNNER = TUTORIALS.parent / "scripts" / "run_notebook.py"

#: tutorial -> (extra argv, regexes its output must contain)
EXPECT = {
    "01_quickstart": ([], [r"scored: the highest next-token logit among", r"pool: \d+ of \d+ identification clips", r"ConAct units per emotion: \{",
                           r"ConAct mean SE [+-]\d+\.\d  ACE [+-]\d+\.\d  ESS [+-]\d+\.\d points",
                           r"random mean SE", r"heatmap: .*01_quickstart_heatmap\.png"]),
    "02_custom_selector": ([], [r"log_ratio: recovers 16 of 16 planted units", r"random: recovers [0-3] of 16",
                                r"LAP picks the same units for every emotion: True",
                                r"log_ratio mean ESS -100\.0 points", r"'log_ratio'\]"]),
    "03_custom_intervention": ([], [r"'clamp'\]", r"clamp at 0\.0: mean SE -100\.0 points",
                                    r"'clamp happy, steer sad': 1\.0", r"plain: layer 1, last position: angry units 6\.\d\d, other emotions' units 2\.\d\d",
                                    r"clamped: layer 1, last position: angry units 0\.10"]),
    "04_new_adapter": ([], [r"Lens\(TinyChatLM, adapter=tiny_chat, layers=2, d_mlp=64\)",
                            r"\('backbone\.blocks\.0\.mlp\.act_fn', 'output'\)", r"matches a forward hook: True",
                            r"MAD units per emotion"]),
    "06_nnsight_native": ([], [r"held-out accuracy (0\.[89]\d|1\.00); shuffled-label control held-out 0\.[0-4]\d", r"patched from happy: .* -> answer happy",
                               r"max \|difference\| to patch_activations: 0\.0", r"AtP top units for +sad: \[.*\]  planted",
                               r"hand vs library: 0\.0e\+00",
                               r"d log p\(token 7\) / d blocks\.1\.mlp\.hook_act: \(2, \d+, 64\)"]),
    "07_moe_experts": ([], [r"qwen3_omni_moe: 2 layers x 6 experts x 16 neurons, top-2; d_mlp = 96",
                            r"hook_act \(8, \d+, 96\) route \(8, \d+, 6\) experts per token: 2",
                            r"T shape \(4, 2, 96\)", r"angry: experts \(layer, expert\) \[\[0, 0\]\]",
                            r"sad: experts \(layer, expert\) \[\[0, 3\]\]",
                            r"LAPE recovers 8 of 8 planted expert units"]),
    "08_exercise": ([], [r"conact: sad accuracy .* change -\d+\.\d points, 95% CI \[-\d+\.\d, -\d+\.\d\]",
                         r"random0: .* change [+-]\d\.\d points", r"ConAct's sad units are necessary for sad",
                         r"Lens\(Qwen2AudioForConditionalGeneration, adapter=encoder, layers=1, d_mlp=128\)",
                         r"encoder: 1 layers x 128 units, largest ConAct gap per layer \[0\.\d+\]"]),
    "05_paper_setup_gpu": (["--check"], [r"configuration ok: 2 models x selectors .* at r = 0\.005",
                                         r"check-only mode \(--check\): nothing was run"]),
}


@pytest.mark.parametrize("name", sorted(EXPECT))
def test_tutorial_runs(name, tmp_path):
    argv, patterns = EXPECT[name]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", ESN_LENS_THREADS="1",
               ESN_LENS_TUTORIAL_OUT=str(tmp_path), ESN_LENS_TUTORIAL_CLIPS="8", MPLBACKEND="Agg")
    nb_path = tmp_path / f"{name}.ipynb"
    p = subprocess.run([sys.executable, str(RUNNER), str(TUTORIALS / f"{name}.py"), str(nb_path), "--", *argv],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "Warning" not in p.stderr.replace("NearChanceWarning", ""), p.stderr[-2000:]  # tutorials print no warnings
    nb = nbformat.read(nb_path, as_version=4)
    stdout = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    for pat in patterns:
        assert re.search(pat, stdout), f"{pat!r} not in output:\n{stdout}"
    if name == "01_quickstart":
        if "planted tiny model" in stdout:  # the fallback model: ConAct finds exactly the planted units
            assert "ConAct mean SE -100.0  ACE +0.0  ESS -100.0 points" in stdout
        assert (tmp_path / "01_quickstart_heatmap.png").read_bytes()[:4] == b"\x89PNG"
        assert any("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)


@pytest.mark.parametrize("name", sorted(EXPECT))
def test_shipped_notebook_matches_script(name):
    """tutorials/notebooks/<name>.ipynb: the script's cells, every code cell run, outputs kept (rebuild:
    ``python scripts/run_notebook.py --all``)."""
    import jupytext

    script, shipped = jupytext.read(TUTORIALS / f"{name}.py"), nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    assert [(c.cell_type, c.source) for c in shipped.cells] == [(c.cell_type, c.source) for c in script.cells]
    code = [c for c in shipped.cells if c.cell_type == "code"]
    stop = shipped.metadata.get("esn_lens_stopped_at_cell", len(code))  # 05 ends itself in check-only mode
    code = code[:stop]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    assert all(c.outputs for c in code if "print(" in c.source)


def test_tutorials_are_percent_notebooks():
    import jupytext

    files = sorted(TUTORIALS.glob("*.py"))
    assert [f.stem for f in files] == sorted(EXPECT)
    for f in files:
        nb = jupytext.read(f)
        kinds = [c.cell_type for c in nb.cells]
        assert kinds.count("code") >= 3 and kinds.count("markdown") >= 3, f.name
        assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# "), f.name
