"""The run report: figures (``figures/*.png``), ``report.md`` and a self-contained ``report.html``.

The report reads like the paper's comparison: per selector, the self effect (SE), average cross effect
(ACE) and specificity (ESS = SE - ACE) of deactivating each emotion's neurons, next to the random
baseline, with a sentence on whether ConAct and MAD are clearly more specific than random; then
steering dose-response, the layer distribution and overlaps.

Example: ``write_report("runs/demo")`` (after a run) or ``esn-lens report runs/demo``.
"""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from . import figures
from .errors import InputError
from .io import atomic_write_bytes
from .report_sections import REPORT_SECTIONS, Block, describe_intervention, section_blocks

NAMES = {"lap": "LAP", "lape": "LAPE", "mad": "MAD", "conact": "ConAct", "random": "random",
         "mean_diff": "mean-diff", "cohens_d": "Cohen's d"}


def pretty(name: str) -> str:
    base, _, tag = name.partition("@")
    return NAMES.get(base, base) + (f"@{tag}" if tag else "")


def pts(v: Any, sign: bool = True) -> str:
    """A fraction as accuracy points: ``pts(-0.135) == "-13.5"``."""
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "n/a"
    x = 100 * float(v)
    x = 0.0 if abs(x) < 0.05 else x  # no "-0.0"
    return f"{x:+.1f}" if sign else f"{x:.1f}"


def ci_str(ci: Any, sign: bool = True) -> str:
    """A 95% interval in points: ``ci_str([-0.2, 0.05]) == "[-20.0, +5.0]"``; "" when there is none."""
    return f"[{pts(ci[0], sign)}, {pts(ci[1], sign)}]" if ci and None not in ci else ""


# ---------------------------------------------------------------------------------------------- blocks
def _md(blocks: list[Block]) -> str:
    out: list[str] = []
    for b in blocks:
        if b.kind in ("h1", "h2", "h3"):
            out.append("#" * int(b.kind[1]) + " " + b.content)
        elif b.kind == "p":
            out.append(b.content)
        elif b.kind == "list":
            out.append("\n".join(f"- {x}" for x in b.content))
        elif b.kind == "code":
            out.append("```\n" + b.content + "\n```")
        elif b.kind == "img":
            out.append(f"![{b.extra}]({b.content})")
        elif b.kind == "table":
            header, rows = b.content
            out.append("| " + " | ".join(header) + " |")
            out[-1] += "\n|" + "|".join(":--" if i == 0 else "--:" for i in range(len(header))) + "|"
            out[-1] += "".join("\n| " + " | ".join(str(c) for c in r) + " |" for r in rows)
        out.append("")
    return "\n".join(out)


def _inline(text: str) -> str:
    """Escape, then render **bold** and `code` of our own sentences."""
    import re

    t = html.escape(text)
    t = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", t)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", t)


CSS = """body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}h1{font-size:1.6em}h2{margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}th,td{border:1px solid #ccc;padding:.25em .6em}
td{text-align:right}td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}
img{max-width:100%;margin:.5em 0}code,pre{background:#f6f6f6;font-size:.9em}pre{padding:.6em;overflow-x:auto}"""


def _html(blocks: list[Block], title: str, root: Path) -> str:
    out = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
           f"<style>{CSS}</style></head><body>"]
    for b in blocks:
        if b.kind in ("h1", "h2", "h3"):
            out.append(f"<{b.kind}>{_inline(b.content)}</{b.kind}>")
        elif b.kind == "p":
            out.append(f"<p>{_inline(b.content)}</p>")
        elif b.kind == "list":
            out.append("<ul>" + "".join(f"<li>{_inline(x)}</li>" for x in b.content) + "</ul>")
        elif b.kind == "code":
            out.append(f"<pre>{html.escape(b.content)}</pre>")
        elif b.kind == "img":
            data = base64.b64encode((root / b.content).read_bytes()).decode()
            out.append(f"<img alt='{html.escape(b.extra or '')}' src='data:image/png;base64,{data}'>")
        elif b.kind == "table":
            header, rows = b.content
            out.append("<table><tr>" + "".join(f"<th>{_inline(h)}</th>" for h in header) + "</tr>"
                       + "".join("<tr>" + "".join(f"<td>{_inline(str(c))}</td>" for c in r) + "</tr>" for r in rows)
                       + "</table>")
    out.append("</body></html>")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------- content
def verdict(results: dict[str, Any], name: str) -> str | None:
    """One sentence: is ``name``'s mean ESS clearly below random's (95% CI of the paired difference < 0),
    clearly above it (CI > 0), or neither?"""
    sel = results.get("selectors", {})
    if name not in sel or "random" not in sel or "deactivation" not in sel[name] or "deactivation" not in sel["random"]:
        return None
    d, r = sel[name]["deactivation"], sel["random"]["deactivation"]
    diff_ci = d.get("ci", {}).get("ess_mean_minus_random")
    diff = (d["ess_mean"] or 0.0) - (r["ess_mean"] or 0.0)
    head = (f"{pretty(name)}: mean ESS {pts(d['ess_mean'])} points vs random {pts(r['ess_mean'])} "
            f"(difference {pts(diff)}")
    if diff_ci and None not in diff_ci:
        if diff_ci[1] < 0:
            return head + f", 95% CI {ci_str(diff_ci)}) -- **clearly below random's**: the interval excludes 0."
        if diff_ci[0] > 0:
            return (head + f", 95% CI {ci_str(diff_ci)}) -- **clearly above random's**: the interval excludes 0; "
                    "the set is not specific (its cross effects exceed its self effect).")
        return (head + f", 95% CI {ci_str(diff_ci)}) -- **not clearly below random's**: the interval includes 0; "
                "no specific effect is shown at this sample size.")
    return head + ") -- no bootstrap interval (bootstrap=0), so no claim either way."


def _units_per_emotion(s: dict[str, Any]) -> str:
    c = list(s.get("counts", {}).values())
    if not c:
        return "0"
    return str(c[0]) if min(c) == max(c) else f"{min(c)}-{max(c)}"


def _peak_layers(counts: Any, k: int = 3) -> str:
    c = np.asarray(counts)
    if c.sum() == 0:
        return "none"
    top = [int(i) for i in np.argsort(-c, kind="stable")[:k] if c[i] > 0]
    return ", ".join(f"{i} ({int(c[i])})" for i in top)


def build_figures(results: dict[str, Any], fig_dir: Path, compare: dict[str, Any] | None = None) -> dict[str, Path]:
    """Draw every figure the results allow into ``fig_dir``; returns name -> path."""
    fig_dir.mkdir(parents=True, exist_ok=True)
    sel = results.get("selectors", {})
    out: dict[str, Path] = {}
    deact = {n: s["deactivation"] for n, s in sel.items() if "deactivation" in s}
    if deact:
        order = _order(deact)
        out["deactivation"] = figures.save(figures.heatmaps(
            {pretty(n): deact[n]["heatmap"] for n in order}, {pretty(n): deact[n]["emotions"] for n in order},
            subtitles={pretty(n): f"ESS {pts(deact[n]['ess_mean'])}" for n in order}), fig_dir / "deactivation_heatmaps.png")
        out["ess"] = figures.save(figures.summary_bars(
            {pretty(n): deact[n]["ess_mean"] for n in order},
            {pretty(n): deact[n].get("ci", {}).get("ess_mean") for n in order}), fig_dir / "ess_summary.png")
    steer = {n: s["steering"] for n, s in sel.items() if "steering" in s}
    if steer:
        order = _order(steer)
        alphas = steer[order[0]]["alphas"]
        curves = {pretty(n): {**steer[n]["target_shift"], "mean": steer[n]["target_shift_mean"]} for n in order}
        out["dose"] = figures.save(figures.dose_response(alphas, curves), fig_dir / "dose_response.png")
        a_max = f"{max(alphas, key=abs):g}"
        out["steer_heat"] = figures.save(figures.heatmaps(
            {pretty(n): steer[n]["heatmaps"][a_max] for n in order}, {pretty(n): steer[n]["emotions"] for n in order},
            title=f"Accuracy change under steering (alpha = {a_max})", row_label="steered ESNs of"),
            fig_dir / "steering_heatmaps.png")
    if sel:
        order = _order(sel)
        out["layers"] = figures.save(figures.layer_counts(
            {pretty(n): sel[n]["layer_counts"]["per_emotion"] for n in order}), fig_dir / "layer_counts.png")
    ov = results.get("layers", {}).get("overlap")
    if ov and len(ov["selectors"]) >= 2:
        out["overlap"] = figures.save(figures.overlap_matrix(ov["mean"], [pretty(n) for n in ov["selectors"]]),
                                      fig_dir / "selector_overlap.png")
    for name, c in results.get("layers", {}).get("cross_dataset", {}).items():
        out[f"cross:{name}"] = figures.save(figures.overlap_matrix(
            c["jaccard"], c["rows"], c["cols"], title=f"{pretty(c['own'])} here vs {pretty(name)} (Jaccard)",
            ylabel="this run", xlabel="transferred set"), fig_dir / f"cross_{_file(name)}.png")
    for name, c in (compare or {}).items():
        out[f"compare:{name}"] = figures.save(figures.overlap_matrix(
            c["jaccard"], c["rows"], c["cols"], title=f"{pretty(name)}: {c['this']} vs {c['other']} (Jaccard)",
            ylabel=c["this"], xlabel=c["other"]), fig_dir / f"compare_{_file(name)}.png")
    return out


def _file(name: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _order(d: dict[str, Any]) -> list[str]:
    """Paper order (LAP, LAPE, MAD, ConAct), then others, random last."""
    paper = ["lap", "lape", "mad", "conact"]
    names = list(d)
    first = [n for n in paper if n in names]
    rest = [n for n in names if n not in paper and n != "random"]
    return first + rest + (["random"] if "random" in names else [])


def compare_runs(run_dir: str | Path, other_dir: str | Path) -> dict[str, Any]:
    """Cross-dataset overlap: for each selector in both runs' ``neurons/``, the emotion x emotion Jaccard matrix."""
    from .neurons import NeuronSet

    a, b = Path(run_dir), Path(other_dir)
    if not (b / "neurons").is_dir():
        raise InputError(f"{other_dir} has no neurons/ folder to compare with")
    out = {}
    for f in sorted((a / "neurons").glob("*.safetensors")):
        g = b / "neurons" / f.name
        if not g.exists() or "@" in f.stem or f.stem == "random":  # random vs random says nothing
            continue
        x, y = NeuronSet.load(f), NeuronSet.load(g)
        if x.masks.shape[1:] != y.masks.shape[1:]:
            raise InputError(f"{f} and {g} are for models of different shapes; cannot compare")
        m = x.overlap_matrix(y, "jaccard", same_model=False)
        out[f.stem] = {"rows": list(x.emotions), "cols": list(y.emotions), "this": a.name, "other": b.name,
                       "jaccard": [[round(float(v), 6) for v in r] for r in m.tolist()],
                       "same_model": x.model_fingerprint == y.model_fingerprint}
    if not out:
        raise InputError(f"{run_dir} and {other_dir} share no selector's neuron file")
    return out


def build_blocks(results: dict[str, Any], figs: dict[str, Path], root: Path,
                 compare: dict[str, Any] | None = None) -> list[Block]:
    cfg, model = results.get("config", {}), results.get("model", {})
    sel = results.get("selectors", {})
    E = results.get("emotions", [])
    rel = lambda k: str(figs[k].relative_to(root))  # noqa: E731
    B: list[Block] = []
    dataset = cfg.get("dataset", "?")
    if dataset in ("manifest", "hf") and cfg.get("data_dir"):
        dataset = f"{dataset} ({Path(cfg['data_dir']).name})"
    name = str(model.get("name", "?"))
    if name.startswith(("/", ".", "~")):  # a local folder: its name, not the whole path
        name = Path(name).name
    if name == "demo" and dataset == "demo":
        name, dataset = "the demo model", "its shipped clips"
    B.append(Block("h1", f"Emotion-sensitive neurons: {name} on {dataset}"))
    clips = results.get("clips", {})
    units = model.get("n_layers", 0) * model.get("d_mlp", 0)
    intro = (f"Model `{model.get('class', '?')}` (adapter `{model.get('adapter', '?')}`), {model.get('n_layers')} layers "
             f"x {model.get('d_mlp')} MLP neurons = {units} units at site `{cfg.get('site')}`; emotions "
             f"{', '.join(E)}. Budget r = {cfg.get('top_frac')} of all units per emotion. SER protocol: "
             f"`{cfg.get('mode')}` answers ({cfg.get('answer')} options).")
    B.append(Block("p", intro))
    facts = []
    if "pool" in clips:
        ida = results.get("identification", {})
        facts.append(f"Identification: {sum(clips['identification'].values())} clips, un-edited accuracy "
                     f"{pts(ida.get('accuracy'), False)}%; pool of correctly answered clips per emotion: "
                     + ", ".join(f"{e} {n}" for e, n in clips["pool"].items()) + ".")
    if "baseline" in results:
        b = results["baseline"]
        facts.append(f"Evaluation (held-out): {b['n']} clips ("
                     + ", ".join(f"{e} {n}" for e, n in clips.get("evaluation", {}).items())
                     + f"); baseline accuracy {pts(b['accuracy'], False)}% {ci_str(b.get('ci'), False)}, per class "
                     + ", ".join(f"{e} {pts(v, False)}" for e, v in b["per_class"].items())
                     + f"; {b['unparsed']} unparsed answers.")
    skipped = clips.get("skipped") or []
    if skipped:
        facts.append(f"Skipped {len(skipped)} bad clip(s): "
                     + "; ".join(f"{s.get('id')} ({s.get('reason')})" for s in skipped) + ".")
    facts += [f"Warning: {w}" for w in (clips.get("source") or {}).get("warnings") or []]
    if facts:
        B.append(Block("list", facts))

    deact = {n: s["deactivation"] for n, s in sel.items() if "deactivation" in s}
    if deact:
        order = _order(deact)
        B.append(Block("h2", "Deactivation: self effect, cross effect, specificity"))
        B.append(Block("p", f"Each emotion's neurons are {describe_intervention(cfg)} in turn (all positions, prefill and generated). "
                       "SE = accuracy change on that emotion's clips, ACE = mean change on the other emotions' clips, "
                       "ESS = SE - ACE, in accuracy points. A specific set gives a clearly negative ESS (its own "
                       "emotion drops, the others do not); the random set of the same size shows the noise level. "
                       "Intervals are 95% stratified bootstrap intervals over evaluation clips."))
        header = ["selector", "units / emotion", "mean SE", "mean ACE", "mean ESS", "95% CI", "ESS - random [95% CI]"]
        rows = []
        for n in order:
            d = deact[n]
            ci = d.get("ci", {})
            vs = "" if n == "random" or "random" not in deact else (
                f"{pts((d['ess_mean'] or 0) - (deact['random']['ess_mean'] or 0))} {ci_str(ci.get('ess_mean_minus_random'))}")
            rows.append([f"**{pretty(n)}**" if n in ("mad", "conact") else pretty(n), _units_per_emotion(sel[n]),
                         pts(d["se_mean"]), pts(d["ace_mean"]), pts(d["ess_mean"]), ci_str(ci.get("ess_mean")), vs])
        B.append(Block("table", (header, rows)))
        sentences = [v for v in (verdict(results, n) for n in ("conact", "mad")) if v]
        for n in order:
            if n not in ("conact", "mad", "random"):
                v = verdict(results, n)
                if v:
                    sentences.append(v)
        if sentences:
            B.append(Block("list", sentences))
        B.append(Block("img", rel("deactivation"), "accuracy-change heatmaps"))
        B.append(Block("img", rel("ess"), "mean ESS per selector"))
        B.append(Block("h3", "Per selector"))
        rnd = deact.get("random")
        for n in order:
            d = deact[n]
            header = ["emotion", "SE", "ACE", "ESS", "SE 95% CI"] + (["ESS (random)"] if rnd and n != "random" else [])
            rows = []
            for e in d["emotions"]:
                r = [e, pts(d["se"][e]), pts(d["ace"][e]), pts(d["ess"][e]), ci_str(d.get("ci", {}).get("se", {}).get(e))]
                if rnd and n != "random":
                    r.append(pts(rnd["ess"].get(e)))
                rows.append(r)
            mean = ["**mean**", pts(d["se_mean"]), pts(d["ace_mean"]), pts(d["ess_mean"]), ""]
            if rnd and n != "random":
                mean.append(pts(rnd["ess_mean"]))
            rows.append(mean)
            src = sel[n].get("source", "")
            B.append(Block("p", f"**{pretty(n)}** ({_units_per_emotion(sel[n])} units per emotion"
                           + (f"; {src}" if src and src != "discovered" else "") + ")"))
            B.append(Block("table", (header, rows)))

    steer = {n: s["steering"] for n, s in sel.items() if "steering" in s}
    if steer:
        order = _order(steer)
        alphas = steer[order[0]]["alphas"]
        B.append(Block("h2", "Steering: dose-response"))
        B.append(Block("p", "Each emotion's neurons are amplified, g <- g x (1 + alpha). Target shift = share of all "
                       "evaluation clips predicted as the steered emotion minus its baseline share (points), "
                       "mean over emotions. A specific set rises with alpha; random stays flat."))
        header = ["selector"] + [f"alpha {a:g}" for a in alphas]
        B.append(Block("table", (header, [[pretty(n)] + [pts(v) for v in steer[n]["target_shift_mean"]] for n in order])))
        B.append(Block("img", rel("dose"), "dose-response curves"))
        B.append(Block("img", rel("steer_heat"), "steering heatmaps"))

    if "layers" in figs:
        B.append(Block("h2", "Where the neurons are"))
        lc = results.get("layers", {}).get("counts", {})
        B.append(Block("list", [f"{pretty(n)}: most units in layers {_peak_layers(lc[n])}" for n in _order(lc)]))
        B.append(Block("img", rel("layers"), "ESNs per layer"))
        if "overlap" in figs:
            B.append(Block("p", "Overlap between selectors: Jaccard index of the selected units, mean over emotions."))
            B.append(Block("img", rel("overlap"), "overlap between selectors"))
    cross = [k for k in figs if k.startswith("cross:") or k.startswith("compare:")]
    if cross:
        B.append(Block("h2", "Cross-dataset overlap"))
        B.append(Block("p", "Jaccard index between the units selected for each emotion on two corpora "
                       "(rows: this run; columns: the other set). Transfer in the paper is partial and asymmetric."))
        for k in cross:
            B.append(Block("img", rel(k), k))

    B.extend(section_blocks(results, root))  # plugins' sections (REPORT_SECTIONS)
    B.append(Block("h2", "Run"))
    timing = results.get("timing", {})
    if timing:
        B.append(Block("p", "Seconds per stage: " + ", ".join(f"{k} {v:.1f}" for k, v in timing.items()
                                                          if k not in ("this_session",)) + "."))
    B.append(Block("p", f"Model fingerprint `{model.get('fingerprint')}`, weights digest `{model.get('weights')}`, "
                   f"dtype {model.get('dtype')}."))
    B.append(Block("code", json.dumps(cfg, indent=1)))
    return B


def write_report(run_dir: str | Path, results: dict[str, Any] | None = None, *,
                 compare: str | Path | None = None) -> dict[str, Path]:
    """Write ``figures/*.png``, ``report.md`` and ``report.html`` into ``run_dir``; returns their paths.

    ``results``: the run's results (read from ``results.json`` when omitted). ``compare``: another run folder;
    adds the cross-dataset overlap of every selector found in both.
    """
    from .io import load_results

    root = Path(run_dir).expanduser()
    if results is None:
        results = load_results(root)
    cmp = compare_runs(root, compare) if compare is not None else None
    figs = build_figures(results, root / "figures", cmp)
    blocks = build_blocks(results, figs, root, cmp)
    title = blocks[0].content if blocks else "ESN report"
    atomic_write_bytes(root / "report.md", _md(blocks).encode())
    from .report_neurons import add_neurons_section

    atomic_write_bytes(root / "report.html", add_neurons_section(root, _html(blocks, title, root)).encode())
    return {"report.md": root / "report.md", "report.html": root / "report.html", **figs}


__all__ = ["write_report", "build_figures", "build_blocks", "compare_runs", "verdict", "pts", "Block", "REPORT_SECTIONS"]
