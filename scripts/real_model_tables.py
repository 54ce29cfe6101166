#!/usr/bin/env python
"""Print docs/real_model.md's study tables from esn_lens/assets/real_model/metrics.json (``"study"``, written by
scripts/study_real_summary.py). tests/test_real_model.py checks that every table line printed here is in the doc.
Example: ``python scripts/real_model_tables.py``."""
from __future__ import annotations

import json
from pathlib import Path

METRICS = Path(__file__).resolve().parents[1] / "esn_lens/assets/real_model/metrics.json"
E = ("angry", "happy", "neutral", "sad")
NAMES = {"lap": "LAP", "lape": "LAPE", "mad": "MAD", "conact": "ConAct", "atp": "AtP",
         "random0": "random (seed 0)", "random1": "random (seed 1)", "random2": "random (seed 2)"}
BUDGETS = ("0.005", "0.01", "0.02")


def f(x: float) -> str:
    return f"{x:+.1f}"


def cell(v: dict) -> str:
    return f"{f(v['SE'])} / {f(v['ACE'])} / **{f(v['ESS'])}** [{f(v['ESS_ci'][0])}, {f(v['ESS_ci'][1])}]"


def accuracy(S: dict) -> list[str]:
    s0 = S["seeds"]["seed0"]
    out = ["| all 144 unseen clips | " + " | ".join(E) + " | mean [95 % CI] |", "|---|---|---|---|---|---|"]
    rows = (("bfloat16 (the study)", s0["unseen_acc"], f" [{s0['unseen_acc_ci'][0]:.1f}, {s0['unseen_acc_ci'][1]:.1f}]"),
            ("float32 (the check)", s0["fp32_acc"], ""), ("bfloat16, every decoder MLP unit off", s0["all_mlp_off_acc"], ""))
    for label, acc, ci in rows:
        out.append(f"| {label} | " + " | ".join(f"{acc[e]:.1f}" for e in E) + f" | **{acc['mean']:.1f}**{ci} |")
    return out


def main_table(S: dict, seed: str = "seed0") -> list[str]:
    s = S["seeds"][seed]
    bs = [b for b in BUDGETS if b in s["deactivation"]]
    out = ["| selector | " + " | ".join(f"r = {float(b) * 100:g} % ({s['eval_clips'][b]} clips)" for b in bs) + " |",
           "|---|" + "---|" * len(bs)]
    for key, name in NAMES.items():
        if not any(key in s["deactivation"][b] for b in bs):
            continue
        out.append(f"| {name} | " + " | ".join(cell(s["deactivation"][b][key]) if key in s["deactivation"][b] else "-"
                                               for b in bs) + " |")
    cells = []
    for b in bs:
        r = s["random"].get(b)
        cells.append("-" if r is None else " / ".join(f"{f(r[k][0])} ± {r[k][1]:.1f}" for k in ("SE", "ACE", "ESS"))
                     + f" ({r['seeds']} seeds)")
    out.append("| random, mean ± sd | " + " | ".join(cells) + " |")
    return out


def heatmaps(S: dict, b: str = "0.01") -> list[str]:
    d = S["seeds"]["seed0"]["deactivation"][b]
    out = ["| units off (rows: whose) | evaluated angry / happy / neutral / sad, accuracy change (points) |", "|---|---|"]
    for key, name in NAMES.items():
        if key in d:
            out.append(f"| {name} | " + "; ".join(e[:3] + " " + " / ".join(f"{x:+.0f}" for x in row)
                                                  for e, row in zip(E, d[key]["delta"])) + " |")
    return out


def steering(S: dict) -> list[str]:
    st = S["seeds"]["seed0"]["steering"]
    al = " / ".join(f"{a:g}" for a in st["alphas"])
    out = [f"| steered set | " + " | ".join(f"{e} share, alpha {al}" for e in E) + " | mean shift |",
           "|---|" + "---|" * (len(E) + 1)]
    for n in st["sets"]:
        out.append(f"| {NAMES.get(n, n)} | " + " | ".join(" / ".join(f"{x:.0f}" for x in st["share"][n][e]) for e in E)
                   + " | " + " / ".join(f(x) for x in st["mean_shift"][n][1:]) + " |")
    return out


def positions(S: dict) -> list[str]:
    p = S["seeds"]["seed0"]["positions"]
    out = ["| units off at | " + " | ".join(NAMES[k] for k in NAMES if k in p) + " |", "|---|" + "---|" * sum(k in p for k in NAMES)]
    for where in ("all", "audio"):
        out.append(f"| {where} positions: SE / ACE / ESS | " +
                   " | ".join(f"{f(p[k][where]['SE'])} / {f(p[k][where]['ACE'])} / **{f(p[k][where]['ESS'])}**"
                              for k in NAMES if k in p) + " |")
    return out


def twins(S: dict) -> list[str]:
    t = S["seeds"]["seed0"]["twins"]
    out = ["| units (r = 1 %) | mean activation, emotional clip / neutral twin (angry; happy; sad) | units higher on the emotional clip, % |",
           "|---|---|---|"]
    for k, name in NAMES.items():
        a = t["activation"].get(k)
        if a:
            out.append(f"| {name} | " + "; ".join(f"{a[e]['emotional']:.3f} / {a[e]['twin']:.3f}" for e in ("angry", "happy", "sad"))
                       + " | " + " / ".join(f"{a[e]['share_higher_on_emotional']:.0f}" for e in ("angry", "happy", "sad")) + " |")
    out += ["", "| twins of | pairs | twins answered neutral / partner, % | " +
            " | ".join(f"{NAMES[k]}: partner share, off / steered x3" for k in ("mad", "conact", "atp", "random0")) + " |",
            "|---|---|---|" + "---|" * 4]
    for e, row in t["answers"].items():
        out.append(f"| {e} | {row['pairs']} | {row['twin_base_share']['neutral']:.0f} / {row['twin_base_share'][e]:.0f} | "
                   + " | ".join(f"{row[k]['twin_off_share_e']:.0f} / {row[k]['twin_steer2_share_e']:.0f}"
                                for k in ("mad", "conact", "atp", "random0")) + " |")
    return out


def text_only(S: dict) -> list[str]:
    t = S["seeds"]["seed0"]["text_only"]
    return ["| transcript alone (no audio) | " + " | ".join(E) + " | mean |", "|---|---|---|---|---|---|",
            "| accuracy, % | " + " | ".join(f"{t['acc'][e]:.1f}" for e in E) + f" | **{t['acc']['mean']:.1f}** |",
            "| share of answers, % | " + " | ".join(f"{t['shares'][e]:.1f}" for e in E) + " | |"]


def seeds(S: dict) -> list[str]:
    names = [k for k in S["seeds"]]
    out = ["| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    g = S["seeds"]
    out.append("| unseen accuracy angry / happy / neutral / sad (**mean**), 144 clips | " + " | ".join(
        " / ".join(f"{g[n]['unseen_acc'][e]:.1f}" for e in E) + f" (**{g[n]['unseen_acc']['mean']:.1f}**)" for n in names) + " |")
    out.append("| every MLP unit off | " + " | ".join(f"{g[n]['all_mlp_off_acc']['mean']:.1f}" for n in names) + " |")
    out.append("| identification pool per emotion | " + " | ".join(str(g[n].get("pool_per_emotion", "-")) for n in names) + " |")
    for key, name in NAMES.items():
        vals = [g[n].get("deactivation_48", {}).get(key) for n in names]
        if any(vals):
            out.append(f"| {name}: SE / ACE / ESS [CI], r = 1 %, 48 clips | " + " | ".join(cell(v) if v else "-" for v in vals) + " |")
    return out


def cross_seed(S: dict) -> list[str]:
    c = S["cross_seed_jaccard"]
    pairs = list(c)
    out = ["| selector | " + " | ".join(pairs) + " |", "|---|" + "---|" * len(pairs)]
    for key in ("lap", "lape", "mad", "conact", "atp"):
        if all(key in c[p] for p in pairs):
            out.append(f"| {NAMES[key]} | " + " | ".join(f"{c[p][key]:.3f}" for p in pairs) + " |")
    return out


def timings(S: dict) -> list[str]:
    out = ["| seed | job | clips | conditions | clip-condition forwards | seconds | ms per forward |", "|---|---|---|---|---|---|---|"]
    for seed, s in S["seeds"].items():
        for job, j in s["jobs"].items():
            if j["rows"]:
                out.append(f"| {seed} | {job} | {j['clips']} | {j['conditions']} | {j['rows']:,} | {j['seconds']:,.0f} | "
                           f"{j['ms_per_row']:,} |")
        t = s["timings"]
        out.append(f"| {seed} | identification (statistics) / AtP attribution | | | | "
                   f"{t.get('identification_s', 0):.0f} / {t.get('attribution_s', 0):.0f} | |")
    return out


TABLES = {"accuracy": accuracy, "main": main_table, "heatmaps": heatmaps, "steering": steering,
          "positions": positions, "twins": twins, "text_only": text_only, "seeds": seeds, "cross_seed": cross_seed, "timings": timings}


def tables(M: dict | None = None) -> dict[str, list[str]]:
    """Every table whose data is in metrics.json, as markdown lines (name -> lines)."""
    M = M or json.loads(METRICS.read_text())
    out = {}
    for name, fn in TABLES.items():
        try:
            out[name] = fn(M["study"])
        except (KeyError, TypeError):
            continue
    return out


def main() -> None:
    for name, lines in tables().items():
        print(f"<!-- {name} -->")
        print("\n".join(lines))
        print()


if __name__ == "__main__":
    main()
