#!/usr/bin/env python
"""Print docs/real_model.md's tables from esn_lens/assets/real_model/metrics.json (tests/test_real_model_doc.py
checks the doc against the same file). Example: ``python scripts/real_model_tables.py``."""
from __future__ import annotations

import json
from pathlib import Path

M = json.loads((Path(__file__).resolve().parents[1] / "esn_lens/assets/real_model/metrics.json").read_text())
E = ("angry", "happy", "neutral", "sad")
NAMES = {"lap": "LAP", "lape": "LAPE", "mad": "MAD", "conact": "ConAct", "atp": "AtP",
         "random0": "random (seed 0)", "random1": "random (seed 1)"}


def f(x: float) -> str:
    return f"{x:+.1f}"


def main() -> None:
    ev = M["eval"]
    print("| | " + " | ".join(E) + " | mean |\n|---|---|---|---|---|---|")
    for label, acc in (("unseen clips of the evaluation subset", ev["unseen_acc"]),
                       ("same clips, every decoder MLP unit off", ev["all_mlp_off_acc"])):
        vals = [100 * acc[e] for e in E]
        print(f"| {label} | " + " | ".join(f"{v:.1f}" for v in vals) + f" | **{sum(vals) / 4:.1f}** |")
    print()
    budgets = [b for b in ("0.005", "0.01", "0.02") if b in ev["deactivation"]]
    print("| selector | " + " | ".join(f"r = {float(b) * 100:g} %" for b in budgets) + " |")
    print("|---|" + "---|" * len(budgets))
    for key, name in NAMES.items():
        cells = []
        for b in budgets:
            v = ev["deactivation"][b].get(key)
            cells.append("-" if v is None else f"{f(v['SE'])} / {f(v['ACE'])} / **{f(v['ESS'])}** "
                                               f"[{f(v['ESS_ci'][0])}, {f(v['ESS_ci'][1])}]")
        print(f"| {name} | " + " | ".join(cells) + " |")
    st = ev.get("steering")
    if st:
        print()
        print("| steered set | " + " | ".join(f"{e} share at alpha " + " / ".join(f"{a:g}" for a in st["alphas"])
                                            for e in E) + " |")
        print("|---|" + "---|" * len(E))
        for sel in st["selectors"]:
            print(f"| {NAMES.get(sel, sel)} | " + " | ".join(" / ".join(f"{100 * x:.0f}" for x in st[sel][e])
                                                           for e in E) + " |")


if __name__ == "__main__":
    main()
