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

from .adapters import Adapter, adapter_for, check_site
from .batch import AudioCache, Batch, ProbeRecord, Scope, TraceOutput, check_processor, processor_identity
from .data.clip import EmotionClip
from .inputs import build_batch, read_seconds
from .errors import InputError
from .interventions import Edit
from .recorders import probe_hooks
from .sites import Site, SiteTable, is_input_side
from .stats import NeuronStats
from .neuron_data import top_activations as _top_activations
from .tracing import Hook, LensNNsight, LensTracer, pad_batches, pad_token_id_of
from .vocab import HOOK_NAMES, SITE_ALIASES, SITES, PositionMasks

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
        self.nn = LensNNsight(self.adapter.root(), self.adapter)
        #: the identity of the processor (a batch built by another processor is refused)
        self.processor_id = processor_identity(processor)
        #: every named site, in forward order, from the adapter's site table
        self.sites = SiteTable(self.nn, self.adapter)
        #: named sites (nnsight views): ``blocks[l].mlp.hook_act`` ..., ``embed``, ``audio_encoder``, ``logits``
        t = self.sites
        self.blocks, self.embed, self.audio_encoder, self.logits = t.blocks, t.embed, t.audio_encoder, t.logits

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

    @property
    def pad_token_id(self) -> int:
        """The id sequences are padded with (the tokenizer's pad token, else its end-of-sequence token)."""
        return pad_token_id_of(self.tokenizer)

    def hook_names(self, site: str = "act") -> list[str]:
        """Names of one site kind in every layer: ``hook_names("act")`` gives ``blocks.{l}.mlp.hook_act``; any
        per-layer kind of the site table works too (``"hook_resid_post"``, ``"mlp.hook_pre"``, ``"hook_attn_out"``)."""
        kind = f"mlp.{HOOK_NAMES[site]}" if site in SITES else SITE_ALIASES.get(site, site)
        names = [f"blocks.{layer}.{kind}" for layer in range(self.n_layers)]
        if names[0] not in self.sites.sites:
            kinds = sorted({n.split(".", 2)[2] for n in self.sites.sites if n.startswith("blocks.0.")})
            raise InputError(f"hook_names: unknown site kind {site!r}; expected one of {list(SITES) + kinds}")
        return names

    def check_batch(self, batch: Any) -> Batch:
        """``batch`` if it is an esn_lens Batch built by this model's processor (or one it shares), else one line."""
        if not isinstance(batch, Batch):
            raise InputError(f"expected an esn_lens Batch (lens.batch(...) or lens.batch_clips(...)), got "
                             f"{type(batch).__name__}")
        return check_processor(batch, self.processor_id)

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
        return build_batch(self.adapter, audios, prompts, sampling_rate=sampling_rate, labels=labels,
                           clip_ids=clip_ids, padding_side=padding_side, system=system, resample=resample,
                           long_audio=long_audio, processor_id=self.processor_id)

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
        loaded = [c.load(self.sampling_rate, max_seconds=read_seconds(self.adapter))[0] for c in clips]
        return self.batch(loaded, prompts, sampling_rate=self.sampling_rate, labels=labels, clip_ids=ids, **kw)

    # ------------------------------------------------------------------ the open core: nnsight traces
    def trace(self, batch: Any = None, *, inference: bool = False,
              remote: bool = False, backend: Any = None, **kwargs) -> LensTracer:
        """Open nnsight's trace of the model: ``with lens.trace(batch) as tracer:``.

        Inside, the named sites (``lens.blocks[l].mlp.hook_act``, ``hook_resid_post``, ``lens.logits``, ...) are
        nnsight views: read, ``.save()``, assign, take ``.grad`` in ``with loss.backward():``. Give no batch and
        use ``with tracer.invoke(batch):`` for several batches in one forward (each invoke sees its own rows;
        ``tracer.invoke_masks`` holds each invoke's position masks padded to the combined length).
        ``inference=True`` runs the forward under ``torch.inference_mode()`` (no gradients, less memory).
        ``backend`` is passed to nnsight; ``remote=True`` is refused for a locally wrapped model (nnsight's remote
        execution needs an NDIF-hosted model; untested here). The library's operations (``edit.apply(lens)``,
        ``stats.record(lens)``, ``lens.probe(...)``) are called inside, before the model reaches their sites
        (after, they refuse with one line naming the site). Example::

            with lens.trace(batch):
                lens.blocks[0].mlp.hook_act.output[..., 3] = 0      # sites in forward order
                h = lens.blocks[1].hook_resid_post.output.save()
                logits = lens.logits.save()
        """
        if remote:
            raise InputError("remote=True: this Lens wraps a local model; nnsight's remote execution needs a model "
                             "hosted on NDIF (pass nnsight's backend= to trace it there; untested in esn_lens)")
        if batch is not None and not isinstance(batch, dict):
            self.check_batch(batch)
        args = () if batch is None else (batch,)
        tracer = self.nn.trace(*args, tracer_cls=LensTracer, backend=backend, **kwargs)
        names = {f"{st.envoy.path}.{'input' if is_input_side(st.side) else 'output'}": n
                 for n, st in self.sites.sites.items() if st.envoy is not None}
        tracer.inference, tracer.state = inference, self.nn.new_state(self.processor_id, names)
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
        if getattr(self.tokenizer, "pad_token_id", None) is not None:
            gen_kwargs["pad_token_id"] = self.tokenizer.pad_token_id
        return self.trace(batch, fn="generate", inference=inference, **{**gen_kwargs, **kwargs})

    def site(self, name: str) -> Site:
        """A named site from its TransformerLens name: ``lens.site("blocks.3.mlp.hook_act")``."""
        return self.sites[name]

    def site_names(self) -> list[str]:
        """Every named site, in forward order (the adapter's site table)."""
        return self.sites.names()

    def attach(self, op: Callable[[Any, Scope], list[Hook]], batch: "Batch | None" = None) -> None:
        """Attach a library operation to the running trace: ``op(lens, scope)`` produces its ``(site, fn)`` hooks for
        the rows of ``scope`` (the running invoke's, or ``batch``'s) and the trace attaches them, all or none (refused
        with one line naming the site if the model already reached it). ``edit.apply(lens)`` is
        ``lens.attach(edit.hooks)``."""
        if not self.nn.states:
            raise InputError("library operations that act inside a trace must be called inside `with lens.trace(...)`")
        state = self.nn.states[-1]
        state.attach(op(self, state.scope(batch)))

    def invoke_masks(self, batch: "Batch | None" = None) -> PositionMasks:
        """Inside a trace: the position masks of the invoke whose code is running (or of ``batch``), padded to the
        combined length of all invokes -- what library operations' ``positions=`` refer to."""
        if not self.nn.states:
            raise InputError("lens.invoke_masks() is for inside `with lens.trace(...)`")
        return self.nn.states[-1].scope(batch).need_batch("invoke_masks").masks

    def pad_batches(self, batches: Sequence[Batch]) -> list[Batch]:
        """Each batch re-padded to the longest, exactly as several ``tracer.invoke`` s of one trace pad them."""
        return pad_batches([self.check_batch(b) for b in batches], self.pad_token_id)

    def probe(self, site: str | Site, pooling: str | Tensor = "last", batch: "Batch | None" = None) -> "ProbeRecord":
        """Record a site's value pooled over positions, from inside a trace (for user probes).

        ``pooling``: ``"last"`` (last valid token), ``"mean_audio"`` (mean over audio positions), ``"mean"`` (mean over
        valid positions), ``"none"`` (every position) or a boolean (batch, pos) mask (mean over it). The value is in
        ``.value`` after the trace: (batch, d) float32 on the CPU (or (batch, pos, d) for ``"none"``). Example::

            import nnsight
            with lens.trace(batch):
                rec = nnsight.save(lens.probe("blocks.1.hook_resid_post", "mean_audio"))  # names not saved vanish
            rec.value.shape   # (batch, hidden)
        """
        st = self.site(site) if isinstance(site, str) else site
        box: list[ProbeRecord] = []

        def op(_model: Any, scope: Scope) -> list[Hook]:
            rec, hooks = probe_hooks(st, pooling, scope)
            box.append(rec)
            return hooks

        self.attach(op, batch)
        return box[0]

    # ------------------------------------------------------------------ the one-call form
    def run(self, batch: Batch, *, edits: Sequence[Edit] = (), record: Iterable[str] = (),
            stats: NeuronStats | None = None, emotion_index: Tensor | None = None, positions: str | None = None,
            on_value: Callable[[int, str, Tensor], None] | None = None, audio_cache: Any = None,
            keep_audio: bool = False, logits: str = "last", max_new_tokens: int | None = None) -> TraceOutput:
        """Run one forward (or generation) that applies ``edits`` and records, all at once.

        The same library operations as inside :meth:`trace` (``edit.apply``, ``stats.record``, caching hooks), on one
        substrate (a :class:`~esn_lens.tracing.TraceState`): a plain forward when nothing needs nnsight, a trace to
        keep or reuse the audio encoder's output, a generation for ``max_new_tokens``.

        - ``record``: names of any sites of the site table (``blocks.{l}.mlp.hook_act``, ``blocks.{l}.hook_resid_post``,
          ``hook_embed``, ``audio_encoder``, ``logits``, ...) whose prefill values are cached (clones, CPU).
        - ``stats`` + ``emotion_index`` (batch,): accumulate NeuronStats at ``stats.site`` over ``positions``.
        - ``on_value(layer, site, value)``: a probe called with each recorded site's real tensor (``site`` is the short
          MLP site name or the per-layer kind; ``layer`` is -1 for sites outside the layers).
        - ``audio_cache``: a previous ``keep_audio=True`` output's ``.audio``; the audio encoder is skipped
          and its cached output (tiled to this batch) reused -- identical results, no re-encoding.
        - ``logits``: "last" (batch, vocab) at each row's last valid position, "all", or "none".
        - ``max_new_tokens``: generate greedily with the edits applied at every step; ``.sequences`` holds the ids.
        """
        from .one_call import run_once

        return run_once(self, batch, edits=edits, record=record, stats=stats, emotion_index=emotion_index,
                        positions=positions, on_value=on_value, audio_cache=audio_cache, keep_audio=keep_audio,
                        logits=logits, max_new_tokens=max_new_tokens)

    # ------------------------------------------------------------------ conveniences
    def run_with_cache(self, batch: Batch, names: Iterable[str] | None = None, *, edits: Sequence[Edit] = ()
                       ) -> tuple[Float[Tensor, "batch pos vocab"], dict[str, Tensor]]:
        """All logits and a dict of cached site values (default: every layer's ``hook_act``)."""
        o = self.run(batch, record=names if names is not None else self.hook_names("act"), edits=edits, logits="all")
        return o.logits, o.cache

    top_activations = _top_activations  # lens.top_activations(clips, units, prompt, k=8): a neuron panel
    def new_stats(self, emotions: Sequence[str], site: str = "act", positions: str = "valid") -> NeuronStats:
        """Empty NeuronStats shaped and fingerprinted for this model."""
        check_site(site)
        return NeuronStats(tuple(emotions), self.n_layers, self.d_mlp, site=site, positions=positions,
                           model_fingerprint=self.fingerprint, adapter=self.adapter.name,
                           device=self.adapter.device, routed=bool(getattr(self.adapter, "routed", False)))

    def collect_stats(self, clips: Sequence[EmotionClip], prompt: str | Sequence[str], emotions: Sequence[str], *,
                      site: str = "act", positions: str = "valid", batch_size: int = 8,
                      stats: NeuronStats | None = None, progress: bool = True, edits: Sequence[Edit] = (),
                      start: int = 0, on_batch: Callable[[int, NeuronStats], None] | None = None,
                      num_workers: int | None = None) -> NeuronStats:
        """Stream ``clips`` through the model and accumulate per-emotion neuron statistics (one trace per batch).

        ``prompt``: one prompt for all clips, or one per clip. To resume, pass the partial ``stats`` and the
        number of clips already consumed as ``start``; ``on_batch(consumed, stats)`` runs after every batch
        (e.g. to checkpoint). ``num_workers``: threads building the next batches while the model runs (None: serial
        with the model on the CPU, else a default for the machine; 0: serial); the statistics are identical either way.
        Example: ``lens.collect_stats(clips, "Which emotion?", ["angry", "sad"])``.
        """
        from .corpus_stats import collect_stats

        return collect_stats(self, clips, prompt, emotions, site=site, positions=positions, batch_size=batch_size,
                             stats=stats, progress=progress, edits=edits, start=start, on_batch=on_batch,
                             num_workers=num_workers)

