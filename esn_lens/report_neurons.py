"""Neuron pages: one panel per unit (scores under every selector, the sets that hold it, per-emotion histograms,
its top clips with audio players and the activation over time under the clip's waveform), rendered from
:func:`esn_lens.neuron_data.page_data`.

Audio is stored once per clip as Ogg Vorbis (``assets/clips/<clip>.ogg`` next to the report, about 16 kB per second
of 16 kHz speech); each top entry has two players of that one file: the whole clip, and the span around the peak
(a media fragment, ``#t=start,end``). In notebooks (:class:`NeuronPanel`) the clips are embedded as data URIs.
Waveforms are SVG symbols drawn once per clip and reused by every entry (``<use>``).
"""
from __future__ import annotations

import base64
import html
import io
import json
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

#: audio format of the report's clip files
AUDIO_FORMAT = ("OGG", "VORBIS", ".ogg", "audio/ogg")
#: seconds of context played on each side of a peak's span
CONTEXT_S = 0.5
WAVE_COLUMNS = 240
W, H = 480, 96
COLORS = ("#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f")

CSS = """.neurons details.neuron{border:1px solid #ddd;border-radius:4px;margin:.4em 0;padding:.2em .6em}
.neurons summary{cursor:pointer;font-weight:600}.neurons .entry{display:flex;gap:1em;align-items:flex-start;
border-top:1px dashed #eee;padding:.4em 0}.neurons .meta{font-size:.85em;max-width:420px}.neurons audio{height:28px;
width:230px;display:block;margin:.15em 0}.neurons .tok{background:#fff3b0;padding:0 .2em}.neurons svg{background:#fafafa}
.neurons table{font-size:.85em}.neurons td.in{font-weight:700;background:#e8f4e8}#neuron-search{font-size:1em;padding:.2em}"""

SEARCH_JS = """(function(){var box=document.getElementById('neuron-search');if(!box)return;
box.addEventListener('input',function(){var q=box.value.trim();var hit=null;
document.querySelectorAll('details.neuron').forEach(function(d){var ok=!q||d.dataset.unit.indexOf(q)===0;
d.style.display=ok?'':'none';if(ok&&q&&d.dataset.unit===q)hit=d;});if(hit){hit.open=true;hit.scrollIntoView();}});})();"""


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def encode_audio(samples: np.ndarray, rate: int) -> bytes:
    """Ogg Vorbis bytes of a mono clip."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.asarray(samples, dtype=np.float32), rate, format=AUDIO_FORMAT[0], subtype=AUDIO_FORMAT[1])
    return buf.getvalue()


def file_sink(root: Path):
    """An audio sink for :func:`~esn_lens.neuron_data.page_data`: writes each clip once as
    ``root/assets/clips/<id>.ogg`` and names it relative to ``root``."""
    from .io import atomic_write_bytes

    def sink(clip_id: str, samples: np.ndarray, rate: int) -> str:
        rel = f"assets/clips/{_safe(clip_id)}{AUDIO_FORMAT[2]}"
        path = Path(root) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, encode_audio(samples, rate))
        return rel

    return sink


def data_uri_sink(clip_id: str, samples: np.ndarray, rate: int) -> str:
    """An audio sink that embeds the clip as a data URI (notebooks)."""
    return f"data:{AUDIO_FORMAT[3]};base64," + base64.b64encode(encode_audio(samples, rate)).decode()


def envelope(samples: np.ndarray, columns: int = WAVE_COLUMNS) -> list[list[float]]:
    """``[max per column, min per column]`` of the clip scaled to its peak (the waveform drawing)."""
    x = np.asarray(samples, np.float32)
    if x.size == 0:
        return [[0.0], [0.0]]
    peak = float(np.abs(x).max()) or 1.0
    cols = [c for c in np.array_split(x, min(columns, x.size)) if c.size]
    return [[round(float(c.max()) / peak, 3) for c in cols], [round(float(c.min()) / peak, 3) for c in cols]]


# ---------------------------------------------------------------------------------------------- drawing
def _wave_symbol(key: str, env: list[list[float]]) -> str:
    """An SVG symbol of a clip's waveform envelope, drawn once and reused by every entry of the clip."""
    top, bot = env
    xs = np.linspace(0, W, len(top))
    mid, amp = H * 0.3, H * 0.27
    pts = [f"{x:.0f},{mid - amp * t:.1f}" for x, t in zip(xs, top)] + \
          [f"{x:.0f},{mid - amp * b:.1f}" for x, b in zip(xs[::-1], bot[::-1])]
    return (f"<symbol id='wave-{key}' viewBox='0 0 {W} {H}'><polygon points='{' '.join(pts)}' "
            "fill='#9ab' stroke='none'/></symbol>")


def _entry_svg(key: str, entry: dict[str, Any], info: dict[str, Any], vmax: float) -> str:
    """Waveform (top) and the unit's activation at the clip's audio tokens over time (bottom), peak marked."""
    spans, kinds = info.get("spans"), info.get("kinds", "")
    parts = [f"<svg class='act' width='{W}' height='{H}' viewBox='0 0 {W} {H}'><use href='#wave-{key}'/>"]
    dur = (info.get("n_samples") or 0) / float(info.get("sampling_rate") or 16000)
    prof = entry["profile"]  # the unit's value at each audio token, in order
    audio_pos = [i for i, k in enumerate(kinds) if k == "a"]
    if spans and dur > 0 and prof:
        base, amp = H - 4, H * 0.38
        pts = [f"{W * (a + b) / 2 / dur:.1f},{base - amp * max(v or 0.0, 0.0) / (vmax or 1.0):.1f}"
               for (a, b), v in zip(spans, prof)]
        parts.append(f"<line x1='0' x2='{W}' y1='{base}' y2='{base}' stroke='#ccc'/>"
                     f"<polyline points='{' '.join(pts)}' fill='none' stroke='#d62728' stroke-width='1.5'/>")
        if kinds[entry["position"]:entry["position"] + 1] == "a":
            a, b = spans[audio_pos.index(entry["position"])]
            parts.append(f"<rect class='peak' x='{W * a / dur:.1f}' y='0' width='{max(W * (b - a) / dur, 2):.1f}' "
                         f"height='{H}' fill='#d62728' opacity='0.18'/>")
    parts.append("</svg>")
    return "".join(parts)


def _hist_svg(unit: dict[str, Any], emotions: Sequence[str]) -> str:
    """Per-emotion histograms of the unit's values (each emotion's bars as a share of its tokens), one row each."""
    h = unit["hist"]
    counts = np.asarray(h["counts"], dtype=np.float64)
    bins = counts.shape[1]
    rh, bw = 22, 8
    out = [f"<svg class='hist' width='{bins * bw + 80}' height='{rh * len(emotions) + 16}'>"]
    for i, e in enumerate(emotions):
        row = counts[i] / max(counts[i].sum(), 1.0)
        y0 = rh * (i + 1)
        out.append(f"<text x='0' y='{y0 - 6}' font-size='11'>{html.escape(e)}</text>")
        for j, v in enumerate(row):
            hh = (rh - 4) * v / max(row.max(), 1e-12)
            out.append(f"<rect x='{70 + j * bw}' y='{y0 - hh:.1f}' width='{bw - 1}' height='{hh:.1f}' "
                       f"fill='{COLORS[i % len(COLORS)]}'/>")
    lo, hi = h["lo"], (h["lo"] or 0) + (h["width"] or 0) * bins
    out.append(f"<text x='70' y='{rh * len(emotions) + 13}' font-size='10'>{lo:.2f}</text><text x='{70 + bins * bw - 30}' "
               f"y='{rh * len(emotions) + 13}' font-size='10'>{hi:.2f}</text></svg>")
    return "".join(out)


def _token_text(tok: Any) -> str:
    """A BPE token as read: the space and newline markers shown as visible symbols."""
    return str(tok).replace("\u0120", "\u2423").replace("\u010a", "\u23ce")


def _position_label(info: dict[str, Any], pos: int) -> str:
    kinds = info.get("kinds", "")
    if kinds[pos:pos + 1] == "a":
        spans = info.get("spans")
        if spans:
            a, b = spans[kinds[:pos].count("a")]
            return f"audio {a:.2f}-{b:.2f} s"
        return f"audio token {kinds[:pos].count('a')}"
    toks = info.get("tokens") or []
    tok = toks[pos] if pos < len(toks) else None
    kind = {"p": "prompt token", "s": "special token", "o": "token"}.get(kinds[pos:pos + 1], "token")
    return f"{kind} <span class='tok'>{html.escape(_token_text(tok))}</span>"


def _peak_window(info: dict[str, Any], pos: int) -> tuple[float, float] | None:
    kinds, spans = info.get("kinds", ""), info.get("spans")
    if kinds[pos:pos + 1] != "a" or not spans:
        return None
    a, b = spans[kinds[:pos].count("a")]
    dur = (info.get("n_samples") or 0) / float(info.get("sampling_rate") or 16000)
    return max(0.0, a - CONTEXT_S), min(dur, b + CONTEXT_S)


def unit_panel(unit: dict[str, Any], data: dict[str, Any], *, open_: bool = False) -> str:
    """The HTML panel of one unit (a ``<details>`` element with ``data-unit="L:N"``)."""
    E = data["emotions"]
    sets = ", ".join(f"{html.escape(n)} ({', '.join(es)})" for n, es in unit["sets"].items()) or "none"
    rows = []
    for sel, sc in unit["scores"].items():
        held = unit["sets"].get(sel, [])
        rows.append(f"<tr><td>{html.escape(sel)}</td>" + "".join(
            f"<td class='{'in' if e in held else ''}'>{'-inf' if sc[e] is None else f'{sc[e]:.3g}'}"
            f" <small>#{unit['ranks'][sel][e] + 1}</small></td>" for e in E) + "</tr>")
    table = ("<table><tr><th>selector</th>" + "".join(f"<th>{html.escape(e)}</th>" for e in E) + "</tr>"
             + "".join(rows) + "</table>") if rows else ""
    vmax = max([v for en in unit["top"] for v in en["profile"] if v is not None] or [1.0])
    entries = []
    for en in unit["top"]:
        key = str(en["clip"])
        info = data["clips"][key]
        src = html.escape(info.get("audio") or "")
        win = _peak_window(info, en["position"])
        span_player = (f"<audio class='span' controls preload='none' src='{src}#t={win[0]:.2f},{win[1]:.2f}'></audio>"
                       f"<small>peak span {win[0]:.2f}-{win[1]:.2f} s</small>") if win else ""
        answer = info.get("prediction") or info.get("answer") or "?"
        entries.append(
            f"<div class='entry' data-clip='{html.escape(info['id'])}'>{_entry_svg(key, en, info, vmax)}"
            f"<div class='meta'><b>{en['value']:.3f}</b> at {_position_label(info, en['position'])}<br>"
            f"clip <code>{html.escape(info['id'])}</code>, label <b>{html.escape(info['emotion'])}</b>, model's answer "
            f"<b>{html.escape(str(answer))}</b><br><i>{html.escape(info.get('text') or '')}</i>"
            f"<audio class='clip' controls preload='none' src='{src}'></audio>{span_player}</div></div>")
    return (f"<details class='neuron' id='unit-{unit['layer']}-{unit['neuron']}' data-unit='{unit['id']}'"
            f"{' open' if open_ else ''}><summary>{unit['id']} &middot; layer {unit['layer']} &middot; mean rank "
            f"{unit['rank'] + 1:g} &middot; sets: {sets}</summary>{table}"
            f"<p>Values per emotion ({data['site']}, {data['positions']} positions):</p>{_hist_svg(unit, E)}"
            f"<p>Top {len(unit['top'])} (clip, position) entries; waveform (grey) with the unit's activation at the "
            f"audio tokens (red line), the peak's span shaded:</p>{''.join(entries)}</details>")


def render(data: dict[str, Any], *, n_open: int = 1, heading: str = "h2") -> str:
    """The Neurons section: search box, the waveform symbols (once per clip), one panel per unit."""
    symbols = "".join(_wave_symbol(k, i["envelope"]) for k, i in data["clips"].items() if i.get("envelope"))
    panels = "".join(unit_panel(u, data, open_=i < n_open) for i, u in enumerate(data["units"]))
    return (f"<section class='neurons' id='neurons'><style>{CSS}</style><{heading}>Neurons</{heading}>"
            f"<p>{len(data['units'])} units of the selectors' sets, most emotion-specific first (held by the most sets, "
            f"then the best mean rank over the selectors' scores for the unit's best emotion). Audio: Ogg Vorbis, one "
            f"file per clip. Find a unit: "
            f"<input id='neuron-search' placeholder='L:N'></p><svg width='0' height='0' style='position:absolute'>"
            f"{symbols}</svg>{panels}<script>{SEARCH_JS}</script></section>")


class NeuronPanel:
    """What :meth:`Lens.top_activations` returns: ``data`` (plain dict), ``top`` (the recorder), :meth:`table`,
    and the neuron panels in notebooks (``_repr_html_``, audio embedded)."""

    def __init__(self, data: dict[str, Any], top: Any = None):
        self.data, self.top = data, top

    def table(self) -> list[dict[str, Any]]:
        """One row per (unit, top entry): unit, rank of the entry, value, clip id, label, position, where."""
        rows = []
        for u in self.data["units"]:
            for r, en in enumerate(u["top"]):
                info = self.data["clips"][str(en["clip"])]
                where = re.sub("<[^>]+>", "", _position_label(info, en["position"]))
                rows.append({"unit": u["id"], "rank": r + 1, "value": en["value"], "clip": info["id"],
                             "emotion": info["emotion"], "position": en["position"], "where": where})
        return rows

    def _repr_html_(self) -> str:
        return render(self.data, n_open=len(self.data["units"]), heading="h3")

    def __repr__(self) -> str:
        return f"NeuronPanel({len(self.data['units'])} units, k={self.data['k']})"


def summary_lines(unit: dict[str, Any], data: dict[str, Any]) -> list[str]:
    """The terminal summary of one unit (``esn-lens inspect``)."""
    out = [f"unit {unit['id']} (layer {unit['layer']}, neuron {unit['neuron']}); mean rank {unit['rank'] + 1:g}",
           "  sets: " + (", ".join(f"{n} ({', '.join(es)})" for n, es in unit["sets"].items()) or "none")]
    for sel, sc in unit["scores"].items():
        out.append(f"  {sel:>10}: " + "  ".join(
            f"{e} {'-inf' if v is None else f'{v:.3g}'} (#{unit['ranks'][sel][e] + 1})" for e, v in sc.items()))
    for r, en in enumerate(unit["top"]):
        info = data["clips"][str(en["clip"])]
        where = re.sub("<[^>]+>", "", _position_label(info, en["position"]))
        out.append(f"  top {r + 1}: {en['value']:.3f}  {info['id']} ({info['emotion']}, answered "
                   f"{info.get('prediction') or info.get('answer') or '?'}) at {where}")
    return out


def page_html(data: dict[str, Any], title: str) -> str:
    """A standalone page of the units in ``data`` (every panel open)."""
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
            f"<body style='font-family:sans-serif;max-width:1100px;margin:1em auto'>"
            f"{render(data, n_open=len(data['units']), heading='h1')}</body></html>")


def add_neurons_section(root: Path, page: str) -> str:
    """``page`` (report.html's text) with the Neurons section of the run in ``root`` (if it recorded top
    activations; its audio files are in ``root/assets/clips``)."""
    f = root / "neuron_pages.json"
    if not f.is_file():
        return page
    data = json.loads(f.read_text())
    section = render(data)
    return page.replace("</body></html>", section + "</body></html>") if "</body></html>" in page else page + section


def inspect_units(run_dir: str | Path, units: Sequence[str]) -> list[str]:
    """``esn-lens inspect``: each unit's summary lines; writes ``RUN/neuron_L-N.html`` per unit (its audio in
    ``RUN/assets``). Only units of the run's sets have recorded top activations."""
    from .errors import InputError
    from .io import atomic_write_bytes
    from .topk import parse_units

    root = Path(run_dir).expanduser()
    f = root / "neuron_pages.json"
    if not f.is_file():
        raise InputError(f"{root}: no neuron_pages.json (the run recorded no top activations: run it with this "
                         "version, discovering, or resume it)")
    data = json.loads(f.read_text())
    by_id = {u["id"]: u for u in data["units"]}
    out = []
    for layer, neuron in parse_units(list(units)).tolist():
        unit = by_id.get(f"{layer}:{neuron}")
        if unit is None:
            raise InputError(f"unit {layer}:{neuron}: not in this run's neuron sets ({len(by_id)} units have pages, "
                             f"e.g. {', '.join(list(by_id)[:3])})")
        page = root / f"neuron_{layer}-{neuron}.html"
        atomic_write_bytes(page, page_html({**data, "units": [unit]}, f"unit {layer}:{neuron}").encode())
        out += summary_lines(unit, data) + [f"  page: {page}"]
    return out


__all__ = ["inspect_units", "NeuronPanel", "render", "unit_panel", "page_html", "add_neurons_section", "file_sink", "data_uri_sink",
           "summary_lines", "AUDIO_FORMAT"]
