"""Lens: wrap an audio-language model with nnsight; record and intervene in one traced forward.

The floor is nnsight's trace of the model, with TransformerLens names (see :mod:`esn_lens.tracing`)::

    lens = Lens(model, processor)                       # adapter chosen from the model
    batch = lens.batch([audio1, audio2], "Which emotion?", sampling_rate=16000)
    with lens.trace(batch) as tracer:
        act = lens.blocks[0].mlp.hook_act.output.save()
        deactivate(units).apply(lens)                   # a library edit in the same trace
        logits = lens.logits.save()

and the one-call form is a thin wrapper over it::

    out = lens.run(batch, record=["blocks.0.mlp.hook_act"], edits=[deactivate(units)])
    out.logits, out.cache["blocks.0.mlp.hook_act"]
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import torch
from jaxtyping import Float
from torch import Tensor, nn

from .adapters import Adapter, adapter_for, check_site, hook_name, parse_hook_name
from .batch import AudioCache, Batch, ProbeRecord, TraceOutput, fit_audio_window
from .data.clip import EmotionClip, prepare_audio
from .errors import InputError
from .interventions import Edit
from .sites import Site, build_sites, envoy_at, site_by_name
from .stats import NeuronStats
from .tracing import LensNNsight, LensTracer, attach_hook, hook_session, record_probe

__all__ = ["AudioCache", "Batch", "Lens", "ProbeRecord", "TraceOutput"]


class Lens:
    """An audio-language model wrapped for neuron recording and intervention (the model is never modified).

    ``Lens(model, processor)`` picks the adapter from the model (or ``adapter="name"``).
    """

    def __init__(self, model: nn.Module, processor: Any = None, *, adapter: str | Adapter | None = None):
        self.adapter: Adapter = adapter if isinstance(adapter, Adapter) else adapter_for(model, processor, adapter)
        self.model = model
        self.processor = processor
        #: nnsight's envoy of the adapter's root module (raw module paths; prefer the named sites below)
        self.nn = LensNNsight(self.adapter.root(), self)
        self._hooks: list[list[Any]] = []   # one list of torch hook handles per active trace
        self._layout: list[tuple[int, Batch, Batch]] = []  # (first row, batch, padded batch) per invoke
        #: named sites (nnsight views): ``blocks[l].mlp.hook_act`` ..., ``embed``, ``audio_encoder``, ``logits``
        self.blocks, self.embed, self.audio_encoder, self.logits = build_sites(self.nn, self.adapter)

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, path_or_id: str, *, dtype: str | torch.dtype | None = None, device: str | None = None,
                        device_map: str | dict | None = None, adapter: str | None = None,
                        trust_remote_code: bool = False, **kwargs) -> "Lens":
        """Load a model and its processor with transformers (local folder or hub id) and wrap it.

        ``dtype`` e.g. ``"bfloat16"``; ``device_map="auto"`` spreads a 7B model over GPUs (accelerate).
        Example: ``Lens.from_pretrained("Qwen/Qwen2-Audio-7B-Instruct", dtype="bfloat16", device_map="auto")``.
        """
        from .loading import load_model_and_processor

        model, processor = load_model_and_processor(path_or_id, dtype=dtype, device=device, device_map=device_map,
                                                    trust_remote_code=trust_remote_code, **kwargs)
        return cls(model, processor, adapter=adapter)

    # ------------------------------------------------------------------ identity
    @property
    def n_layers(self) -> int:
        return self.adapter.n_layers

    @property
    def d_mlp(self) -> int:
        return self.adapter.d_mlp

    @property
    def fingerprint(self) -> str:
        return self.adapter.fingerprint

    @property
    def sampling_rate(self) -> int:
        return self.adapter.sampling_rate

    @property
    def tokenizer(self):
        return self.adapter.tokenizer

    def hook_names(self, site: str = "act") -> list[str]:
        """TransformerLens-style names of a site in every layer: ``blocks.{l}.mlp.hook_{site}``."""
        return [hook_name(layer, site) for layer in range(self.n_layers)]

    def __repr__(self) -> str:
        return f"Lens({type(self.model).__name__}, adapter={self.adapter.name}, layers={self.n_layers}, d_mlp={self.d_mlp})"

    # ------------------------------------------------------------------ inputs
    def batch(self, audios: Sequence[Any] | None, prompts: str | Sequence[str], *, sampling_rate: int | None = None,
              labels: Sequence[str] | None = None, clip_ids: Sequence[str] | None = None, padding_side: str = "left",
              system: str | None = None, resample: bool = True, long_audio: str = "warn") -> Batch:
        """Validate audio, build model inputs with the model's processor and chat template, and masks.

        ``audios``: mono arrays at ``sampling_rate`` (resampled to the model's rate; ``resample=False``
        refuses a wrong rate instead), or None for text-only models. ``prompts``: one per clip or one for all.
        ``long_audio``: what happens to a clip longer than the model's audio window (Qwen2-Audio: 30 s) -- "warn"
        (cut to the window, with a warning naming the clips), "truncate" (cut, silently: a stated choice) or "error".
        """
        n = len(audios) if audios is not None else (1 if isinstance(prompts, str) else len(prompts))
        if n == 0:
            raise InputError("batch: no clips given")
        if isinstance(prompts, str):
            prompts = [prompts] * n
        if len(prompts) != n:
            raise InputError(f"batch: {len(prompts)} prompts for {n} clips")
        prepared = None
        if audios is not None:
            if sampling_rate is None:
                raise InputError(f"batch: sampling_rate is required with audio (the model expects {self.sampling_rate} Hz)")
            ids = clip_ids or [str(i) for i in range(n)]
            prepared = [prepare_audio(a, sampling_rate, self.sampling_rate, name=f"clip {cid}", resample=resample)
                        for a, cid in zip(audios, ids)]
            prepared = fit_audio_window(prepared, ids, self.adapter, self.sampling_rate, long_audio)
        inputs = self.adapter.build_inputs(prepared, list(prompts), padding_side=padding_side, system=system)
        dev = self.adapter.device
        inputs = {k: (v.to(dev) if isinstance(v, Tensor) else v) for k, v in inputs.items()}
        masks = self.adapter.position_masks({k: v.cpu() for k, v in inputs.items()})
        if prepared is not None and self.adapter.audio_token is not None:
            n_audio = masks.audio.sum(1).tolist()
            short = [f"clip {cid} ({a.size / self.sampling_rate:.3f} s)" for cid, a, k in zip(ids, prepared, n_audio) if k == 0]
            if short:  # the model would silently see no audio at all
                raise InputError(f"{', '.join(short)}: too short, the model makes no audio tokens from it; "
                                 "pad it with silence (about 0.05 s is the shortest usable clip)")
        return Batch(inputs, masks, list(labels) if labels is not None else None, list(clip_ids) if clip_ids else None)

    def batch_clips(self, clips: Sequence[EmotionClip], prompts: str | Sequence[str], *,
                    text_template: str = "Transcript: {text}\n{prompt}", **kw) -> Batch:
        """:meth:`batch` from :class:`EmotionClip` objects (audio read on demand, labels kept).

        For a text-only model (no audio placeholder in its adapter) each clip's transcript is put in
        the prompt with ``text_template`` instead, so text emotion corpora run through the same protocol.
        """
        prompts = [prompts] * len(clips) if isinstance(prompts, str) else list(prompts)
        labels, ids = [c.emotion for c in clips], [c.utterance_id for c in clips]
        if self.adapter.audio_token is None:
            texts = [text_template.format(text=c.text, prompt=p) for c, p in zip(clips, prompts)]
            return self.batch(None, texts, labels=labels, clip_ids=ids, **kw)
        loaded = [c.load(self.sampling_rate)[0] for c in clips]
        return self.batch(loaded, prompts, sampling_rate=self.sampling_rate, labels=labels, clip_ids=ids, **kw)

    # ------------------------------------------------------------------ the open core: nnsight traces
    def trace(self, batch: "Batch | dict[str, Tensor] | None" = None, *, inference: bool = False,
              remote: bool = False, backend: Any = None, **kwargs) -> LensTracer:
        """Open nnsight's trace of the model: ``with lens.trace(batch) as tracer:``.

        Inside, the named sites (``lens.blocks[l].mlp.hook_act``, ``hook_resid_post``, ``lens.logits``, ...) are
        nnsight views: read, ``.save()``, assign, take ``.grad`` in ``with loss.backward():``. Give no batch and
        use ``with tracer.invoke(batch):`` for several batches in one forward (each invoke sees its own rows).
        ``inference=True`` runs the forward under ``torch.inference_mode()`` (no gradients, less memory).
        ``backend`` is passed to nnsight; ``remote=True`` is refused for a locally wrapped model (nnsight's remote
        execution needs an NDIF-hosted model; untested here). The library's operations (``edit.apply(lens)``,
        ``stats.record(lens)``, ``lens.probe(...)``) are called inside. Example::

            with lens.trace(batch):
                h = lens.blocks[1].hook_resid_post.output.save()
                lens.blocks[0].mlp.hook_act.output[..., 3] = 0
                logits = lens.logits.save()
        """
        if remote:
            raise InputError("remote=True: this Lens wraps a local model; nnsight's remote execution needs a model "
                             "hosted on NDIF (pass nnsight's backend= to trace it there; untested in esn_lens)")
        args = () if batch is None else (batch,)
        tracer = self.nn.trace(*args, tracer_cls=LensTracer, backend=backend, **kwargs)
        tracer.inference, tracer.lens = inference, self
        return tracer

    def generate(self, batch: "Batch | None" = None, *, max_new_tokens: int = 20, inference: bool = False,
                 **kwargs) -> LensTracer:
        """Open nnsight's trace of greedy generation: ``with lens.generate(batch, max_new_tokens=5) as tracer:``.

        Library edits applied inside act at every step (prefill and generated tokens); step-wise user code goes
        through ``tracer.iter[...]``; ``tracer.result`` holds the generated ids.
        """
        if not self.adapter.supports_generate:
            raise InputError(f"{self.adapter.name}: generation is not supported through this backend; "
                             "use constrained scoring (logits) instead")
        gen_kwargs = dict(max_new_tokens=int(max_new_tokens), do_sample=False)
        tok = self.tokenizer
        if getattr(tok, "pad_token_id", None) is not None:
            gen_kwargs["pad_token_id"] = tok.pad_token_id
        return self.trace(batch, fn="generate", inference=inference, **{**gen_kwargs, **kwargs})

    def site(self, name: str) -> Site:
        """A named site from its TransformerLens name: ``lens.site("blocks.3.mlp.hook_act")``."""
        return site_by_name(self, name)

    def site_names(self) -> list[str]:
        """Every named site, in forward order."""
        names = ["hook_embed"] + (["audio_encoder"] if self.audio_encoder is not None else [])
        for b in self.blocks:
            names += [b.hook_resid_pre.name, b.attn.name, b.mlp.hook_pre.name, b.mlp.hook_act.name,
                      b.mlp.hook_post.name, b.mlp.name, b.hook_resid_post.name]
        return names + ["logits"]

    def probe(self, site: str | Site, pooling: str | Tensor = "last", batch: "Batch | None" = None) -> "ProbeRecord":
        """Record a site's value pooled over positions, from inside a trace (for user probes).

        ``pooling``: ``"last"`` (last valid token), ``"mean_audio"`` (mean over audio positions), ``"mean"`` (mean over
        valid positions), ``"none"`` (every position) or a boolean (batch, pos) mask (mean over it). The value is in
        ``.value`` after the trace: (batch, d) float32 on the CPU (or (batch, pos, d) for ``"none"``). Example::

            with lens.trace(batch):
                rec = lens.probe("blocks.1.hook_resid_post", "mean_audio")
            rec.value.shape   # (batch, hidden)
        """
        return record_probe(self, self.site(site) if isinstance(site, str) else site, pooling, batch)

    # ------------------------------------------------------------------ the one-call form
    def run(self, batch: Batch, *, edits: Sequence[Edit] = (), record: Iterable[str] = (),
            stats: NeuronStats | None = None, emotion_index: Tensor | None = None, positions: str | None = None,
            on_value: Callable[[int, str, Tensor], None] | None = None, audio_cache: Any = None,
            keep_audio: bool = False, logits: str = "last", max_new_tokens: int | None = None) -> TraceOutput:
        """Run one traced forward (or generation) that applies ``edits`` and records, all at once.

        A thin wrapper over :meth:`trace` (inference mode): ``edit.apply``, ``stats.record`` and recording hooks.

        - ``record``: hook names (``blocks.{l}.mlp.hook_act``) whose values are cached (clones, CPU).
        - ``stats`` + ``emotion_index`` (batch,): accumulate NeuronStats at ``stats.site`` over ``positions``.
        - ``on_value(layer, site, value)``: a probe called with each recorded site's real tensor.
        - ``audio_cache``: a previous ``keep_audio=True`` output's ``.audio``; the audio encoder is skipped
          and its cached output (tiled to this batch) reused -- identical results, no re-encoding.
        - ``logits``: "last" (batch, vocab) at each row's last valid position, "all", or "none".
        - ``max_new_tokens``: generate greedily with the edits applied at every step; ``.sequences`` holds the ids.
        """
        edits = self._check_edits(edits)
        if logits not in ("last", "all", "none"):
            raise InputError(f"logits must be 'last', 'all' or 'none', got {logits!r}")
        names = list(record)
        recorded: list[tuple[int, str]] = []
        for nm in names:
            layer, site = parse_hook_name(nm)
            if not 0 <= layer < self.n_layers:
                raise InputError(f"{nm}: layer {layer} out of range 0..{self.n_layers - 1}")
            recorded.append((layer, site))
        if stats is not None:
            if emotion_index is None:
                raise InputError("run: stats given without emotion_index (one emotion index per row)")
            stats.check_model(self)
        if on_value is not None and stats is not None:
            recorded += [(layer, stats.site) for layer in range(self.n_layers) if (layer, stats.site) not in recorded]
        cache: dict[str, Tensor] = {}
        tower = None
        if audio_cache is not None or keep_audio:
            if self.audio_encoder is None:
                raise InputError(f"{self.adapter.name}: this model has no audio tower to cache")
            tower = self.audio_encoder.envoy
        out: dict[str, Any] = {}
        embeds_path = self.adapter.embeds_reuse_path
        model_inputs: Any = batch
        if audio_cache is not None and audio_cache.kind == "embeds":
            # the decoder's input embeddings (text + audio) are reused: no audio processing at all
            model_inputs = Batch({"inputs_embeds": audio_cache.tiled(batch.size),
                                  "attention_mask": batch.inputs["attention_mask"]}, batch.masks)
            tower = None
        last_idx = batch.masks.last_token().float().argmax(1)
        if max_new_tokens is None and tower is None and not keep_audio:
            # nothing here needs nnsight's envoys: the same library operations (their hooks), without a tracer
            with hook_session(self, model_inputs):
                self._attach_run_ops(batch, edits, stats, emotion_index, positions, recorded, names, cache, on_value)
                args, kwargs = self.adapter.call_args(model_inputs.inputs)
                with torch.inference_mode():
                    res = self.adapter.root()(*args, **kwargs)
            if logits != "none":
                lg = res if isinstance(res, Tensor) else res.logits
                out["logits"] = (lg[torch.arange(lg.shape[0]), last_idx.to(lg.device)] if logits == "last"
                                 else lg).detach().float().cpu()
        elif max_new_tokens is None:
            with self.trace(model_inputs, inference=True) as tracer:
                if audio_cache is not None and tower is not None:
                    tower.skip(audio_cache.tiled(batch.size))
                elif keep_audio and embeds_path is not None:
                    out["audio"] = AudioCache(envoy_at(self.nn, embeds_path).inputs[1]["inputs_embeds"], batch.size, "embeds")
                elif keep_audio:
                    out["audio"] = AudioCache(tower.output, batch.size)
                self._attach_run_ops(batch, edits, stats, emotion_index, positions, recorded, names, cache, on_value)
                if logits != "none":
                    lg = self.logits.output
                    out["logits"] = (lg[torch.arange(lg.shape[0]), last_idx.to(lg.device)] if logits == "last"
                                     else lg).detach().float().cpu()
                elif not edits and not recorded and stats is None:
                    tracer.stop()  # only the audio encoder's output was wanted: skip the decoder
        else:
            with self.generate(model_inputs, max_new_tokens=int(max_new_tokens), inference=True) as tracer:
                self._attach_run_ops(batch, edits, stats, emotion_index, positions, recorded, names, cache, on_value)
                out["sequences"] = tracer.result
        seq = out.get("sequences")
        if seq is not None and not isinstance(seq, Tensor):
            seq = getattr(seq, "sequences", seq)
        return TraceOutput(out.get("logits"), cache, seq, out.get("audio"))

    def _attach_run_ops(self, batch, edits, stats, emotion_index, positions, recorded, names, cache, on_value) -> None:
        """The library operations of :meth:`run`, called inside its trace (edits first, then recorders)."""
        for e in edits:
            e.apply(self, batch)
        if stats is not None:
            stats.record(self, batch, emotion_index, positions=positions)
        for layer, site in recorded:
            self._record_site(layer, site, hook_name(layer, site) in names, on_value, cache)

    def _record_site(self, layer: int, site: str, keep: bool, on_value, cache: dict[str, Tensor]) -> None:
        nm = hook_name(layer, site)
        done = [False]

        def fn(value: Tensor) -> None:
            if done[0]:  # prefill only
                return None
            done[0] = True
            if keep:
                cache[nm] = value.detach().to("cpu", copy=True)
            if on_value is not None:
                on_value(layer, site, value)
            return None

        attach_hook(self, self.blocks[layer].mlp.site(site), fn)

    def _check_edits(self, edits: Sequence[Edit]) -> list[Edit]:
        edits = list(edits)
        for e in edits:
            if not isinstance(e, Edit):
                raise InputError(f"edits must be esn_lens Edit objects, got {type(e).__name__}")
            e.check_shape(self.n_layers, self.d_mlp)
        return edits

    def _pad_token_id(self) -> int:
        tok = self.tokenizer
        pid = getattr(tok, "pad_token_id", None)
        return int(pid) if pid is not None else int(getattr(tok, "eos_token_id", 0) or 0)

    # ------------------------------------------------------------------ conveniences
    def run_with_cache(self, batch: Batch, names: Iterable[str] | None = None, *, edits: Sequence[Edit] = ()
                       ) -> tuple[Float[Tensor, "batch pos vocab"], dict[str, Tensor]]:
        """All logits and a dict of cached site values (default: every layer's ``hook_act``)."""
        o = self.run(batch, record=names if names is not None else self.hook_names("act"), edits=edits, logits="all")
        return o.logits, o.cache

    def top_activations(self, clips: Sequence[EmotionClip], units: Any, prompt: str | Sequence[str], **kw: Any) -> Any:
        """Top-k (clip, position) entries, histograms and activation over time of ``units`` ("L:N" or (layer, neuron))
        over ``clips``: a panel in notebooks, ``.data`` / ``.table()`` in scripts (see :mod:`esn_lens.neuron_data`)."""
        from .neuron_data import top_activations

        return top_activations(self, clips, units, prompt, **kw)

    def new_stats(self, emotions: Sequence[str], site: str = "act", positions: str = "valid") -> NeuronStats:
        """Empty NeuronStats shaped and fingerprinted for this model."""
        check_site(site)
        return NeuronStats(tuple(emotions), self.n_layers, self.d_mlp, site=site, positions=positions,
                           model_fingerprint=self.fingerprint, adapter=self.adapter.name,
                           device=self.adapter.device)

    def collect_stats(self, clips: Sequence[EmotionClip], prompt: str | Sequence[str], emotions: Sequence[str], *,
                      site: str = "act", positions: str = "valid", batch_size: int = 8,
                      stats: NeuronStats | None = None, progress: bool = True, edits: Sequence[Edit] = (),
                      start: int = 0, on_batch: Callable[[int, NeuronStats], None] | None = None,
                      num_workers: int | None = None) -> NeuronStats:
        """Stream ``clips`` through the model and accumulate per-emotion neuron statistics (one trace per batch).

        ``prompt``: one prompt for all clips, or one per clip. To resume, pass the partial ``stats`` and the
        number of clips already consumed as ``start``; ``on_batch(consumed, stats)`` runs after every batch
        (e.g. to checkpoint). ``num_workers``: threads building the next batches while the model runs (None: a
        default for the machine, 0: serial); the statistics are identical either way.
        Example: ``lens.collect_stats(clips, "Which emotion?", ["angry", "sad"])``.
        """
        from .prefetch import prefetched
        from tqdm.auto import tqdm

        stats = stats or self.new_stats(emotions, site, positions)
        clips = list(clips)
        if not clips:
            raise InputError("collect_stats: no clips given")
        prompts = [prompt] * len(clips) if isinstance(prompt, str) else list(prompt)
        if len(prompts) != len(clips):
            raise InputError(f"collect_stats: {len(prompts)} prompts for {len(clips)} clips (give one, or one per clip)")
        if not 0 <= start <= len(clips):
            raise InputError(f"collect_stats: start={start} outside 0..{len(clips)}")
        idx_all = stats.emotion_index([c.emotion for c in clips])
        bar = tqdm(total=len(clips), initial=start, desc="collect stats", unit="clip", disable=not progress)
        firsts = list(range(start, len(clips), batch_size))
        build = lambda first: self.batch_clips(clips[first:first + batch_size], prompts[first:first + batch_size])  # noqa: E731
        for first, b in zip(firsts, prefetched(firsts, build, num_workers)):
            n = b.size
            self.run(b, stats=stats, emotion_index=idx_all[first:first + n], logits="none", edits=edits)
            bar.update(n)
            if on_batch is not None:
                on_batch(first + n, stats)
        bar.close()
        return stats
