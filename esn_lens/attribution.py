"""Attribution patching (AtP) and activation patching on the open core.

AtP estimates, for every (layer, neuron) unit at once, what deactivating it would do to a metric: the first-order
change of zeroing a unit is ``-a * dM/da`` summed over positions. With the metric ``M`` = log-probability of the
true emotion's option minus the mean log-probability of the other options, ``a * dM/da`` is the unit's estimated
support for the right answer. :class:`AttributionStats` accumulates it per emotion, streaming (no per-token
tensors), and the ``atp`` selector ranks units by its mean over clips of each emotion.

Example::

    att = collect_attribution(lens, clips, emotions, evaluator=evaluator)   # one forward + backward per batch
    neurons = find_neurons(att, "atp", top_frac=0.02)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from jaxtyping import Bool, Float, Float64, Int64
from torch import Tensor

from .errors import InputError
from .stats import UnitStats


@dataclass
class AttributionStats(UnitStats):
    """Per-emotion sums of per-clip attribution ``sum_pos a * dM/da`` of every unit at one MLP site.

    ``sum``: (emotion, layer, neuron) float64; ``n_clips``: (emotion,). ``mean`` = sum / n_clips.
    """

    sum: Tensor = field(init=False, repr=False)
    n_clips: Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.sum = torch.zeros(len(self.emotions), self.n_layers, self.d_mlp, dtype=torch.float64)
        self.n_clips = torch.zeros(len(self.emotions), dtype=torch.float64)

    @property
    def mean(self) -> Float64[Tensor, "emotion layer neuron"]:
        """Mean attribution per clip of each emotion (refuses emotions without clips)."""
        empty = [e for e, n in zip(self.emotions, self.n_clips.tolist()) if n == 0]
        if empty:
            raise InputError(f"no attributed clips for emotion(s) {empty}: add clips of every emotion before scoring")
        return self.sum / self.n_clips[:, None, None]

    def add_layer(self, layer: int, per_row: Float[Tensor, "batch neuron"], emotion_index: Int64[Tensor, " batch"]) -> None:
        """Add one layer's per-row attributions to the row's emotion."""
        onehot = torch.nn.functional.one_hot(emotion_index.long().cpu(), len(self.emotions)).to(torch.float64)
        self.sum[:, layer] += onehot.T @ per_row.detach().to("cpu", torch.float64)

    def merge(self, other: "AttributionStats") -> "AttributionStats":
        """Add another shard's sums (identical to one pass over both)."""
        self.check_compatible(other)
        self.sum += other.sum
        self.n_clips += other.n_clips
        return self

    def state_dict(self) -> dict[str, Any]:
        """Tensors and metadata, enough to rebuild these statistics (checkpoints, files)."""
        meta = dict(emotions=list(self.emotions), n_layers=self.n_layers, d_mlp=self.d_mlp, site=self.site,
                    positions=self.positions, model_fingerprint=self.model_fingerprint, adapter=self.adapter)
        return {"meta": meta, "sum": self.sum.clone(), "n_clips": self.n_clips.clone()}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> "AttributionStats":
        """Rebuild from :meth:`state_dict`, refusing tensors of the wrong shape or dtype."""
        meta = dict(state["meta"])
        att = cls(tuple(meta.pop("emotions")), **meta)
        for name in ("sum", "n_clips"):
            t = state[name]
            if tuple(t.shape) != tuple(getattr(att, name).shape) or t.dtype != torch.float64:
                raise InputError(f"attribution tensor {name}: {t.dtype} {tuple(t.shape)}, expected float64 "
                                 f"{tuple(getattr(att, name).shape)}")
            getattr(att, name).copy_(t)
        return att

    def __repr__(self) -> str:
        n = ", ".join(f"{e}={int(c)}" for e, c in zip(self.emotions, self.n_clips.tolist()))
        return f"AttributionStats(site={self.site!r}, layers={self.n_layers}, d_mlp={self.d_mlp}, clips: {n})"


def option_margin(logits: Float[Tensor, "batch vocab"], option_ids: Int64[Tensor, "batch emotion"],
                  true_index: Int64[Tensor, " batch"]) -> Float[Tensor, " batch"]:
    """Log-probability of the true emotion's option minus the mean of the other options' (per row).

    ``option_ids[b, e]``: the token id that answers emotion ``e`` in row ``b``'s prompt.
    """
    lp = logits.float().log_softmax(-1).gather(1, option_ids.to(logits.device))
    E = lp.shape[1]
    true = lp.gather(1, true_index.to(lp.device)[:, None])[:, 0]
    return true - (lp.sum(1) - true) / max(E - 1, 1)


def emotion_option_ids(evaluator: Any, prompts: Sequence[Any]) -> Int64[Tensor, "batch emotion"]:
    """For each prompt, the option token id of each of the evaluator's emotions (digit or word answers)."""
    ids = evaluator._option_token_ids()
    if evaluator.answer == "word":
        return torch.tensor([ids] * len(prompts), dtype=torch.long)
    return torch.tensor([[ids[p.options.index(e)] for e in evaluator.emotions] for p in prompts], dtype=torch.long)


def record_attribution(lens: Any, att: AttributionStats, batch: Any, option_ids: Int64[Tensor, "batch emotion"],
                       emotion_index: Int64[Tensor, " batch"]) -> None:
    """One forward + backward of ``batch``: add every unit's attribution to ``att`` (the model's weights get no
    gradients; its parameters' ``requires_grad`` flags are restored)."""
    params = [p for p in lens.adapter.root().parameters()]
    flags = [p.requires_grad for p in params]
    mask = batch.masks.select(att.positions).to(torch.float32)
    last = batch.masks.last_token().float().argmax(1)
    acts: list[Any] = []
    try:
        for p in params:
            p.requires_grad_(False)
        with torch.enable_grad():
            with lens.trace(batch):
                lens.embed.output.requires_grad_(True)
                for layer in range(lens.n_layers):
                    acts.append(lens.blocks[layer].mlp.site(att.site).output)
                lg = lens.logits.output
                metric = option_margin(lg[torch.arange(lg.shape[0]), last.to(lg.device)], option_ids, emotion_index)
                with metric.sum().backward():
                    for layer in reversed(range(lens.n_layers)):
                        a = acts[layer]
                        per_row = torch.einsum("bp,bpn->bn", mask.to(a.device), (a * a.grad).float())
                        att.add_layer(layer, per_row, emotion_index)
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)
    att.n_clips += torch.bincount(emotion_index.cpu(), minlength=len(att.emotions)).to(torch.float64)


def collect_attribution(lens: Any, clips: Sequence[Any], emotions: Sequence[str], *, evaluator: Any = None,
                        answer: str | None = None, site: str = "act", positions: str = "valid", batch_size: int = 8,
                        progress: bool = True, att: AttributionStats | None = None) -> AttributionStats:
    """Attribution patching over labelled clips, scoring the answer the way ``evaluator`` reads it (its prompt and
    its answer format). Without an evaluator, ``answer`` (``"word"`` or ``"digit"``) or else the model's recorded
    answer format sets a constrained evaluator (shuffled options, seed 0); with neither, the call is refused: the
    margin of the wrong answer tokens selects the wrong units. Returns :class:`AttributionStats` for the ``atp``
    selector (``att``: add into these instead, e.g. to continue a checkpointed pass).

    Example: ``att = collect_attribution(lens, pool, emotions, evaluator=SEREvaluator(lens, emotions, answer="word"))``.
    """
    from tqdm.auto import tqdm

    from .vocab import check_site
    from .evaluate import SEREvaluator

    check_site(site)
    clips = list(clips)
    if not clips:
        raise InputError("collect_attribution: no clips given")
    ev = evaluator if evaluator is not None else SEREvaluator(
        lens, emotions, mode="constrained", answer=_answer_format(lens, answer))
    if answer is not None and evaluator is not None and answer != ev.answer:
        raise InputError(f"collect_attribution: answer={answer!r} but the evaluator reads {ev.answer!r} answers; "
                         "pass one of them")
    if tuple(ev.emotions) != tuple(emotions):
        raise InputError(f"collect_attribution: the evaluator's emotions {list(ev.emotions)} differ from {list(emotions)}")
    if att is None:
        att = AttributionStats(tuple(emotions), lens.n_layers, lens.d_mlp, site=site, positions=positions,
                               model_fingerprint=lens.fingerprint, adapter=lens.adapter.name)
    elif att.emotions != tuple(emotions) or att.shape != (len(emotions), lens.n_layers, lens.d_mlp):
        raise InputError(f"collect_attribution: att holds {att.shape} units for {list(att.emotions)}, expected "
                         f"{(len(emotions), lens.n_layers, lens.d_mlp)} for {list(emotions)}")
    index = {e: i for i, e in enumerate(att.emotions)}
    bad = sorted({c.emotion for c in clips} - set(index))
    if bad:
        raise InputError(f"collect_attribution: unknown emotion label(s) {bad}; expected one of {list(att.emotions)}")
    bar = tqdm(total=len(clips), desc="attribution", unit="clip", disable=not progress)
    for start in range(0, len(clips), batch_size):
        chunk = clips[start:start + batch_size]
        prompts = [ev.prompt(c) for c in chunk]
        batch = lens.batch_clips(chunk, [p.text for p in prompts])
        record_attribution(lens, att, batch, emotion_option_ids(ev, prompts),
                           torch.tensor([index[c.emotion] for c in chunk], dtype=torch.long))
        bar.update(len(chunk))
    bar.close()
    return att


def _answer_format(lens: Any, answer: str | None) -> str:
    """The answer format to score without an evaluator: ``answer``, else the model's recorded one, else refuse."""
    if answer is not None:
        return answer
    recorded = getattr(lens.model, "esn_lens_answer_format", None)  # set by the model's record (#28)
    if isinstance(recorded, dict) and recorded.get("answer"):
        return str(recorded["answer"])
    raise InputError("collect_attribution: which answer does the model give? pass evaluator= (the SEREvaluator whose "
                     "answers you score, e.g. demo_evaluator(lens) for the shipped demo model) or answer='word' / "
                     "'digit'")


# ---------------------------------------------------------------------- activation patching
def align_positions(batch: Any, align: str) -> Bool[Tensor, "batch pos"]:
    """Positions used to align clips of different lengths: ``"audio"`` (the audio span) or ``"last"``."""
    if align == "audio":
        return batch.masks.select("audio")
    if align == "last":
        return batch.masks.last_token()
    raise InputError(f"align must be 'audio' or 'last', got {align!r}")


def patch_activations(lens: Any, source: Any, target: Any, site: str, *, units: Any = None, align: str = "last",
                      logits: str = "last") -> Float[Tensor, "batch ..."]:
    """Run ``target`` with a site's value taken from ``source`` (row for row) and return its logits.

    ``site``: a named site (``"blocks.3.mlp.hook_act"``, ``"blocks.3.hook_resid_post"``, ...); ``units``: the last-dim
    indices to patch (a list or a bool mask of the site's width; None = all); ``align``: ``"last"`` patches each row's
    last token, ``"audio"`` its audio positions (when the audio spans differ in length, target position ``i`` of ``n``
    takes source position ``floor(i * m / n)`` of ``m``). Both run in one forward (two invokes).
    ``logits``: "last" (each row's last token) or "all". Returns float32 logits on the CPU.
    Example: ``patch_activations(lens, happy_batch, sad_batch, "blocks.1.hook_resid_post", align="audio")``.
    """
    if source.size != target.size:
        raise InputError(f"patch_activations: source has {source.size} rows, target {target.size}; pair them row for row")
    if logits not in ("last", "all"):
        raise InputError(f"patch_activations: logits must be 'last' or 'all', got {logits!r}")
    lens.site(site)  # a clear error for an unknown name, before any forward
    ps, pt = lens.pad_batches([source, target])  # the layout the traced forward uses
    src_pos, tgt_pos = align_positions(ps, align), align_positions(pt, align)
    if bool((src_pos.sum(1) == 0).any()) or bool((tgt_pos.sum(1) == 0).any()):
        raise InputError(f"patch_activations: some rows have no {align} positions to align on")
    pairs: list[tuple[Tensor, Tensor]] = []
    for b in range(source.size):  # one index map per row (clips differ in length); units are patched at once
        s_idx, t_idx = src_pos[b].nonzero()[:, 0], tgt_pos[b].nonzero()[:, 0]
        pairs.append((s_idx[torch.arange(len(t_idx)) * len(s_idx) // len(t_idx)], t_idx))
    out: dict[str, Tensor] = {}
    carried: list[Any] = []
    with lens.trace() as tracer:
        with tracer.invoke(source):
            carried.append(lens.site(site).output)
        with tracer.invoke(target):
            value = lens.site(site).output  # reached after the source's value exists
            _write_patch(value, carried[0], pairs, units)
            out["logits"] = lens.logits.output
    lg = out["logits"].detach().float().cpu()
    if logits == "all":
        return lg
    return lg[torch.arange(lg.shape[0]), pt.masks.last_token().float().argmax(1)]


def _write_patch(value: Tensor, src: Tensor, pairs: list[tuple[Tensor, Tensor]], units: Any) -> None:
    """Write each row's source positions into its target positions at the chosen units (in place)."""
    W = value.shape[-1]
    u = torch.arange(W) if units is None else torch.as_tensor(units)
    if u.dtype == torch.bool:
        if u.numel() != W:
            raise InputError(f"patch_activations: units mask has {u.numel()} entries, the site has {W}")
        u = u.nonzero()[:, 0]
    if len(u) and (int(u.max()) >= W or int(u.min()) < 0):
        raise InputError(f"patch_activations: unit index out of range 0..{W - 1}")
    u = u.to(value.device)
    for b, (s_idx, t_idx) in enumerate(pairs):
        value[b, t_idx.to(value.device)[:, None], u[None, :]] = (
            src[b, s_idx.to(src.device)[:, None], u.to(src.device)[None, :]].to(value.dtype))
