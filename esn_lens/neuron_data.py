"""What a neuron page shows, as plain data: a unit's top (clip, position) entries with the clip's activation
profile, the time span (audio tokens) or token text (prompt, answer, special) of every position, per-emotion
histograms, scores under every selector and the sets that hold it.

:func:`collect_top` streams clips through a :class:`~esn_lens.topk.TopActivations` recorder (library call and run
stage alike); :func:`page_data` turns the recorder into the JSON-able dict that ``report.html``, ``esn-lens inspect``
and :meth:`Lens.top_activations <esn_lens.lens.Lens.top_activations>` render (:mod:`esn_lens.report_neurons`).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from .errors import InputError
from .topk import EMPTY, TopActivations, edges_from_stats, parse_units


def collect_top(lens: Any, clips: Sequence[Any], prompts: Sequence[str], top: TopActivations, *,
                batch_size: int = 8, first: int = 0, indices: Sequence[int] | None = None) -> TopActivations:
    """Add ``clips`` into ``top``, one trace per batch; their global clip indices (the tie-break) are ``indices``,
    by default ``first``, ``first + 1``, ..."""
    idx = torch.as_tensor(list(indices) if indices is not None else range(first, first + len(clips)), dtype=torch.int64)
    for i in range(0, len(clips), batch_size):
        b = lens.batch_clips(list(clips[i:i + batch_size]), list(prompts[i:i + batch_size]))
        with torch.no_grad(), lens.trace(b):
            top.record(lens, b, idx[i:i + b.size])
    return top


def clip_positions(lens: Any, clip: Any, prompt: str) -> dict[str, Any]:
    """Each non-padding position of ``clip``'s input: ``kinds`` (one letter each: a = audio token, p = prompt text,
    s = special, o = other), ``tokens`` (the token, for non-audio positions) and ``spans`` (seconds read by each
    audio token, in order; None where the adapter has no time map) plus the clip's length in samples."""
    b = lens.batch_clips([clip], prompt)
    m = b.masks
    keep = (~m.padding[0]).nonzero().flatten()
    ids = b.inputs["input_ids"][0].cpu()[keep].tolist()
    toks = lens.tokenizer.convert_ids_to_tokens(ids)
    kinds = "".join("a" if m.audio[0, p] else "p" if m.prompt_text[0, p] else "s" if m.special[0, p] else "o"
                    for p in keep.tolist())
    out: dict[str, Any] = {"kinds": kinds, "tokens": [None if k == "a" else str(t) for k, t in zip(kinds, toks)],
                           "spans": None, "n_samples": None, "sampling_rate": lens.sampling_rate}
    if kinds.count("a") and getattr(lens.adapter, "audio_token_samples", None) is not None:
        n = int(clip.load(lens.sampling_rate)[0].size)
        spans = lens.adapter.audio_token_spans(n)
        if spans.shape[0] == kinds.count("a"):
            out["spans"] = [[round(float(a), 4), round(float(e), 4)] for a, e in spans.tolist()]
        out["n_samples"] = n
    return out


def _ranks(scores: torch.Tensor) -> torch.Tensor:
    """Rank of every unit (0 = best) within each emotion's scores (E, L, N); ties by index."""
    E = scores.shape[0]
    flat = scores.reshape(E, -1)
    order = torch.sort(flat, dim=1, descending=True, stable=True).indices
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(flat.shape[1]).expand(E, -1).contiguous())
    return ranks.reshape(scores.shape)


def _num(x: Any, digits: int = 4) -> float | None:
    return None if (x is None or not math.isfinite(float(x))) else round(float(x), digits)


def page_data(lens: Any, top: TopActivations, clips: Sequence[Any], prompts: Sequence[str], *,
              scores: dict[str, torch.Tensor] | None = None, sets: dict[str, Any] | None = None,
              answers: dict[str, dict[str, Any]] | None = None, audio_sink: Any = None) -> dict[str, Any]:
    """The JSON-able pages of ``top``'s units, most emotion-specific first: held by the most sets, then the best
    (lowest) mean rank over the scoring selectors for the unit's best emotion, then layer, neuron. ``scores``:
    selector -> (emotion, layer, neuron) scores; ``sets``: name -> NeuronSet; ``answers``: clip id -> {"answer",
    "prediction"} (the model's SER answer); ``audio_sink(clip_id, samples, rate) -> src`` stores each top clip's
    audio once (default: embedded data URIs)."""
    from .report_neurons import data_uri_sink, envelope

    audio_sink = audio_sink or data_uri_sink
    scores, sets, answers = scores or {}, sets or {}, answers or {}
    E = top.emotions
    ranks = {n: _ranks(s) for n, s in scores.items()}
    units = top.units
    l_idx, n_idx = units[:, 0], units[:, 1]
    held = sum((ns.all_units()[l_idx, n_idx].long() for ns in sets.values()), torch.zeros(len(units), dtype=torch.long))
    mean_rank = (torch.stack([r[:, l_idx, n_idx] for r in ranks.values()]).double().mean(0).min(0).values
                 if ranks else torch.zeros(len(units), dtype=torch.float64))  # (unit,)
    units = units.tolist()
    order = sorted(range(len(units)), key=lambda i: (-int(held[i]), float(mean_rank[i]), units[i][0], units[i][1]))
    width = (top.hi - top.lo) / top.bins
    used: set[int] = set()
    pages = []
    for i in order:
        l, n = units[i]
        entries = []
        for slot in range(top.k):
            c = int(top.clips[i, slot])
            if c == EMPTY:
                continue
            used.add(c)
            prof = top.profiles[i, slot]
            entries.append({"clip": c, "position": int(top.positions[i, slot]), "value": _num(top.values[i, slot]),
                            "profile": [_num(v, 3) for v in prof[~torch.isnan(prof)].tolist()]})
        pages.append({
            "id": f"{l}:{n}", "layer": l, "neuron": n, "rank": round(float(mean_rank[i]), 1), "n_sets": int(held[i]),
            "scores": {s: {e: _num(float(v[j, l, n])) for j, e in enumerate(E)} for s, v in scores.items()},
            "ranks": {s: {e: int(r[j, l, n]) for j, e in enumerate(E)} for s, r in ranks.items()},
            "sets": {name: [e for e in ns.emotions if bool(ns[e][l, n])] for name, ns in sets.items()
                     if any(bool(ns[e][l, n]) for e in ns.emotions)},
            "hist": {"lo": _num(top.lo[i]), "width": _num(width[i], 6), "counts": top.hist[:, i].long().tolist()},
            "top": entries,
        })
    clip_info = {}
    for c in sorted(used):
        clip = clips[c]
        info = {"id": clip.utterance_id, "emotion": clip.emotion, "text": clip.text or "",
                **answers.get(clip.utterance_id, {})}
        info.update(clip_positions(lens, clip, prompts[c]))
        if lens.adapter.audio_token is not None:  # text-only models: no audio to play
            samples = clip.load(lens.sampling_rate)[0]
            info["audio"] = audio_sink(clip.utterance_id, samples, int(lens.sampling_rate))
            info["envelope"] = envelope(samples)
        clip_info[str(c)] = info
    return {"emotions": list(E), "k": top.k, "bins": top.bins, "site": top.site, "positions": top.positions_set,
            "units": pages, "clips": clip_info}


def top_activations(lens: Any, clips: Sequence[Any], units: Any, prompt: str | Sequence[str], *, k: int = 8,
                    stats: Any = None, bins: int = 24, site: str = "act", positions: str = "valid",
                    batch_size: int = 8, emotions: Sequence[str] | None = None) -> Any:
    """:meth:`Lens.top_activations`: the top-k (clip, position) entries of ``units`` over ``clips``, as a
    :class:`~esn_lens.report_neurons.NeuronPanel` (``_repr_html_`` in notebooks, ``.data`` / ``.table()``)."""
    from .report_neurons import NeuronPanel

    clips = list(clips)
    if not clips:
        raise InputError("top_activations: no clips given")
    prompts = [prompt] * len(clips) if isinstance(prompt, str) else list(prompt)
    if len(prompts) != len(clips):
        raise InputError(f"top_activations: {len(prompts)} prompts for {len(clips)} clips (give one, or one per clip)")
    u = parse_units(units)
    bad = [f"{l}:{n}" for l, n in u.tolist() if not (0 <= l < lens.n_layers and 0 <= n < lens.d_mlp)]
    if bad:
        raise InputError(f"top_activations: unit(s) {bad} outside this model's {lens.n_layers} layers x {lens.d_mlp} "
                         "neurons")
    if stats is None:  # histogram edges need each unit's spread: one statistics pass over the same clips
        E = tuple(emotions) if emotions is not None else tuple(sorted({c.emotion for c in clips}))
        stats = lens.collect_stats(clips, prompts, E, site=site, positions=positions, batch_size=batch_size,
                                   progress=False, num_workers=0)
    lo, hi = edges_from_stats(stats, u)
    top = TopActivations(u, stats.emotions, k=k, lo=lo, hi=hi, bins=bins, site=site, positions_set=positions,
                         model_fingerprint=lens.fingerprint)
    collect_top(lens, clips, prompts, top, batch_size=batch_size)
    return NeuronPanel(page_data(lens, top, clips, prompts), top=top)


__all__ = ["collect_top", "clip_positions", "page_data", "top_activations"]
