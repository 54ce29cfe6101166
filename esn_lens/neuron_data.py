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
from .inputs import prompts_per_clip
from .topk import EMPTY, TopActivations, edges_from_stats, parse_units


def collect_top(lens: Any, clips: Sequence[Any], prompts: Sequence[str], top: TopActivations, *,
                batch_size: int = 8, first: int = 0, indices: Sequence[int] | None = None,
                num_workers: int | None = None, seen: dict[int, tuple[str, list[int]]] | None = None) -> TopActivations:
    """Add ``clips`` into ``top``, one plain forward per batch with the recorder's hooks (the next batches built in
    ``num_workers`` threads meanwhile); their global clip indices (the tie-break) are ``indices``, by default
    ``first``, ``first + 1``, ... ``seen``: filled with :func:`batch_positions` of the clips the top entries hold
    (pruned after each batch), so the pages need not rebuild their inputs."""
    from .prefetch import prefetched

    idx = torch.as_tensor(list(indices) if indices is not None else range(first, first + len(clips)), dtype=torch.int64)
    firsts = list(range(0, len(clips), batch_size))
    build = lambda i: lens.batch_clips(list(clips[i:i + batch_size]), list(prompts[i:i + batch_size]))  # noqa: E731
    for i, b in zip(firsts, prefetched(firsts, build, num_workers)):
        with lens.nn.plain(b):  # the recorder's hooks on one plain forward (no tracer needed)
            top.record(lens, b, idx[i:i + b.size])
            args, kwargs = lens.adapter.call_args(b.inputs)
            with torch.no_grad():
                lens.adapter.root()(*args, **kwargs)
        if seen is not None:
            held = set(top.clips.flatten().tolist())
            seen.update({c: p for c, p in zip(idx[i:i + b.size].tolist(), batch_positions(b)) if c in held})
            for c in [c for c in seen if c not in held]:
                del seen[c]
    return top


def batch_positions(b: Any) -> list[tuple[str, list[int]]]:
    """Per row of a batch: the kinds of its non-padding positions (one letter each: a = audio token, p = prompt text,
    s = special, o = other) and their token ids."""
    m = b.masks
    ids_all = b.inputs["input_ids"].cpu()
    kind = torch.full(m.padding.shape, ord("o"), dtype=torch.int64)
    for mask, letter in ((m.special, "s"), (m.prompt_text, "p"), (m.audio, "a")):  # later rows win, as ranked
        kind[mask.cpu()] = ord(letter)
    out = []
    for r in range(b.size):  # one step per row
        keep = (~m.padding[r]).cpu().nonzero().flatten()
        out.append(("".join(map(chr, kind[r, keep].tolist())), ids_all[r, keep].tolist()))
    return out


def clip_positions(lens: Any, clips: Sequence[Any], prompts: Sequence[str], audios: Sequence[Any] | None = None,
                   known: Sequence[tuple[str, list[int]] | None] | None = None) -> list[dict[str, Any]]:
    """Each non-padding position of each clip's input: ``kinds`` (see :func:`batch_positions`), ``tokens`` (the token
    text, None at audio tokens) and ``spans`` (seconds read by each audio token, in order; None where the adapter has
    no time map), ``n_samples``. ``audios``: the clips' samples at the model's rate, if loaded; ``known``: each
    clip's :func:`batch_positions` if recorded (the others' inputs are built here, in one batch)."""
    known = list(known) if known is not None else [None] * len(clips)
    todo = [r for r, k in enumerate(known) if k is None]
    if todo:
        sub = [clips[r] for r in todo]
        if audios is None or lens.adapter.audio_token is None:
            b = lens.batch_clips(sub, [prompts[r] for r in todo])
        else:
            b = lens.batch([audios[r] for r in todo], [prompts[r] for r in todo], sampling_rate=lens.sampling_rate,
                           labels=[c.emotion for c in sub], clip_ids=[c.utterance_id for c in sub])
        for r, pos in zip(todo, batch_positions(b)):
            known[r] = pos
    has_map = getattr(lens.adapter, "audio_token_samples", None) is not None
    out = []
    for r, clip in enumerate(clips):  # one step per top clip (a page's few clips)
        kinds, ids = known[r]
        toks = lens.tokenizer.convert_ids_to_tokens(ids)
        info: dict[str, Any] = {"kinds": kinds, "tokens": [None if k == "a" else str(t) for k, t in zip(kinds, toks)],
                                "spans": None, "n_samples": None, "sampling_rate": lens.sampling_rate}
        if "a" in kinds and has_map:
            n = int((audios[r] if audios is not None else clip.load(lens.sampling_rate)[0]).size)
            spans = lens.adapter.audio_token_spans(n)
            if spans.shape[0] == kinds.count("a"):
                info["spans"] = [[round(a, 4), round(e, 4)] for a, e in spans.tolist()]
            info["n_samples"] = n
        out.append(info)
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
              answers: dict[str, dict[str, Any]] | None = None, audio_sink: Any = None,
              seen: dict[int, tuple[str, list[int]]] | None = None) -> dict[str, Any]:
    """The JSON-able pages of ``top``'s units, most emotion-specific first: held by the most sets, then the best
    (lowest) mean rank over the scoring selectors for the unit's best emotion, then layer, neuron. ``scores``:
    selector -> (emotion, layer, neuron) scores; ``sets``: name -> NeuronSet; ``answers``: clip id -> {"answer",
    "prediction"} (the model's SER answer); ``audio_sink(clip_id, samples, rate) -> src`` stores each top clip's
    audio once (default: embedded data URIs); ``seen``: the top clips' positions recorded by :func:`collect_top`."""
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
    width = ((top.hi - top.lo) / top.bins).tolist()
    lo, vals, cls, poss = top.lo.tolist(), top.values.tolist(), top.clips.tolist(), top.positions.tolist()
    hist = top.hist.long().permute(1, 0, 2).tolist()  # (unit, emotion, bin)
    score_at = {s: v[:, l_idx, n_idx].T.tolist() for s, v in scores.items()}  # (unit, emotion)
    rank_at = {s: r[:, l_idx, n_idx].T.tolist() for s, r in ranks.items()}
    set_at = {name: ns.masks[:, l_idx, n_idx].T.tolist() for name, ns in sets.items()}  # (unit, emotion of ns)
    used = sorted({c for row in cls for c in row if c != EMPTY})
    has_audio = lens.adapter.audio_token is not None  # text-only models: no audio to play
    audio = {c: clips[c].load(lens.sampling_rate)[0] for c in used} if has_audio else {}
    seen = seen or {}
    info_of = dict(zip(used, clip_positions(lens, [clips[c] for c in used], [prompts[c] for c in used],
                                            [audio[c] for c in used] if has_audio else None,
                                            [seen.get(c) for c in used])))
    audio_at = {c: [p for p, k in enumerate(info_of[c]["kinds"]) if k == "a"] for c in used}
    pages = []
    for i in order:  # one step per page unit (the sets' few units), building its JSON
        l, n = units[i]
        entries = []
        for slot, c in enumerate(cls[i]):
            if c == EMPTY:
                continue
            prof = top.profiles[i, slot, audio_at[c]].tolist() if audio_at[c] else []
            entries.append({"clip": c, "position": poss[i][slot], "value": _num(vals[i][slot]),
                            "profile": [_num(v, 3) for v in prof]})
        pages.append({
            "id": f"{l}:{n}", "layer": l, "neuron": n, "rank": round(float(mean_rank[i]), 1), "n_sets": int(held[i]),
            "scores": {s: {e: _num(v[i][j]) for j, e in enumerate(E)} for s, v in score_at.items()},
            "ranks": {s: {e: int(v[i][j]) for j, e in enumerate(E)} for s, v in rank_at.items()},
            "sets": {name: [e for e, x in zip(sets[name].emotions, v[i]) if x] for name, v in set_at.items()
                     if any(v[i])},
            "hist": {"lo": _num(lo[i]), "width": _num(width[i], 6), "counts": hist[i]},
            "top": entries,
        })
    clip_info = {}
    for c in used:
        clip = clips[c]
        info = {"id": clip.utterance_id, "emotion": clip.emotion, "text": clip.text or "",
                **answers.get(clip.utterance_id, {}), **info_of[c]}
        if has_audio:
            info["audio"] = audio_sink(clip.utterance_id, audio[c], int(lens.sampling_rate))
            info["envelope"] = envelope(audio[c])
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
    prompts = prompts_per_clip(prompt, len(clips), "top_activations")
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
    seen: dict[int, tuple[str, list[int]]] = {}
    collect_top(lens, clips, prompts, top, batch_size=batch_size, seen=seen)
    return NeuronPanel(page_data(lens, top, clips, prompts, seen=seen), top=top)


__all__ = ["collect_top", "batch_positions", "clip_positions", "page_data", "top_activations"]
