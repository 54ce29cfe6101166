"""The one-call form of the open core: :meth:`esn_lens.lens.Lens.run` -- one forward (or generation) that applies edits
and records sites and statistics, on a plain forward when nothing needs nnsight's envoys, on a trace to keep or reuse
the audio encoder's output. The operations are the trace's own (``edit.apply``, ``stats.record``, caching hooks).
``lens`` is the facade, passed in (nothing below :mod:`esn_lens.lens` imports it).
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import torch
from torch import Tensor

from .batch import AudioCache, Batch, TraceOutput
from .errors import InputError
from .interventions import Edit
from .recorders import cache_hooks
from .sites import envoy_at
from .stats import NeuronStats
from .vocab import HOOK_NAMES


def run_once(lens: Any, batch: Batch, *, edits: Sequence[Edit] = (), record: Iterable[str] = (),
             stats: NeuronStats | None = None, emotion_index: Tensor | None = None, positions: str | None = None,
             on_value: Callable[[int, str, Tensor], None] | None = None, audio_cache: Any = None,
             keep_audio: bool = False, logits: str = "last", max_new_tokens: int | None = None) -> TraceOutput:
    """What :meth:`esn_lens.lens.Lens.run` does (its docstring has the arguments)."""
    lens.check_batch(batch)
    edits = check_edits(lens, edits)
    if logits not in ("last", "all", "none"):
        raise InputError(f"logits must be 'last', 'all' or 'none', got {logits!r}")
    sites = [lens.site(nm) for nm in record]
    keep = {s.name for s in sites}
    if stats is not None:
        if emotion_index is None:
            raise InputError("run: stats given without emotion_index (one emotion index per row)")
        stats.check_model(lens)
        if on_value is not None:
            sites += [s for s in (lens.site(n) for n in lens.hook_names(stats.site)) if s.name not in keep]
    if (audio_cache is not None or keep_audio) and lens.audio_encoder is None:
        raise InputError(f"{lens.adapter.name}: this model has no audio tower to cache")
    cache: dict[str, Tensor] = {}
    cb = None if on_value is None else (lambda name, v: on_value(*_layer_and_kind(name), v))

    def ops() -> None:  # the library operations, called inside the forward's state: edits first, then recorders
        for e in edits:
            e.apply(lens, batch)
        if stats is not None:
            stats.record(lens, batch, emotion_index, positions=positions)
        if sites:
            lens.attach(lambda _m, sc: cache_hooks(sites, cache, keep, cb, sc), batch)

    if max_new_tokens is not None:
        got: dict[str, Any] = {}  # (names bound in a trace block vanish at its end; a container outlives it)
        with lens.generate(batch, max_new_tokens=int(max_new_tokens), inference=True) as tracer:
            ops()
            got["seq"] = tracer.result
        return TraceOutput(None, cache, getattr(got["seq"], "sequences", got["seq"]))
    if audio_cache is None and not keep_audio:
        lg, audio = _run_plain(lens, batch, ops), None
    else:
        lg, audio = _run_audio(lens, batch, ops, audio_cache, keep_audio, logits != "none" or bool(
            edits or sites or stats is not None))
    return TraceOutput(None if logits == "none" else _pick_logits(lg, batch, logits), cache, None, audio)


def _run_plain(lens: Any, batch: Batch, ops: Callable[[], None]) -> Tensor:
    """One forward without nnsight's tracer (nothing here needs its envoys): the trace's state and hooks only."""
    with lens.nn.plain(batch):
        ops()
        args, kwargs = lens.adapter.call_args(batch.inputs)
        with torch.inference_mode():
            res = lens.adapter.root()(*args, **kwargs)
    return res if isinstance(res, Tensor) else res.logits

def _run_audio(lens: Any, batch: Batch, ops: Callable[[], None], audio_cache: Any, keep_audio: bool, decoder: bool
               ) -> tuple[Any, Any]:
    """One trace that keeps the audio encoder's output (``keep_audio``) or reuses a kept one (``audio_cache``)."""
    tower, inputs, out = lens.audio_encoder.envoy, batch, {}
    path = lens.adapter.embeds_reuse_path
    if audio_cache is not None and audio_cache.kind == "embeds":
        # the decoder's input embeddings (text + audio) are reused: no audio processing at all
        inputs = Batch({"inputs_embeds": audio_cache.tiled(batch.size),
                        "attention_mask": batch.inputs["attention_mask"]}, batch.masks, processor_id=batch.processor_id)
        tower = None
    with lens.trace(inputs, inference=True) as tracer:
        ops()
        if audio_cache is not None and tower is not None:
            tower.skip(audio_cache.tiled(batch.size))
        elif keep_audio and path is not None:
            out["audio"] = AudioCache(envoy_at(lens.nn, path).inputs[1]["inputs_embeds"], batch.size, "embeds")
        elif keep_audio:
            out["audio"] = AudioCache(tower.output, batch.size)
        if decoder:
            out["logits"] = lens.logits.output
        else:
            tracer.stop()  # only the audio encoder's output was wanted: skip the decoder
    return out.get("logits"), out.get("audio")

def check_edits(lens: Any, edits: Sequence[Edit]) -> list[Edit]:
    """``edits`` as a list, each an :class:`Edit` shaped for this model (else one clear error)."""
    edits = list(edits)
    for e in edits:
        if not isinstance(e, Edit):
            raise InputError(f"edits must be esn_lens Edit objects, got {type(e).__name__}")
        e.check_shape(lens.n_layers, lens.d_mlp)
    return edits


def _pick_logits(lg: Tensor, batch: Batch, mode: str) -> Tensor:
    """Float32 CPU logits: each row's last valid position ("last") or every position ("all")."""
    if mode == "last":  # the last non-padding token (masks over encoder frames: the tokens' attention mask)
        pad = batch.masks.padding if batch.masks.padding.shape[1] == lg.shape[1] else batch.inputs["attention_mask"] == 0
        lg = lg[torch.arange(lg.shape[0]), (~pad).long().cumsum(1).argmax(1).to(lg.device)]
    return lg.detach().float().cpu()


def _layer_and_kind(name: str) -> tuple[int, str]:
    """``(3, "act")`` for ``blocks.3.mlp.hook_act``, ``(3, "hook_resid_post")``, ``(-1, "logits")``."""
    parts = name.split(".", 2)
    if parts[0] != "blocks" or len(parts) < 3:
        return -1, name
    inv = {f"mlp.{v}": k for k, v in HOOK_NAMES.items()}
    return int(parts[1]), inv.get(parts[2], parts[2])
