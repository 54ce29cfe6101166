"""Attribution patching (AtP) on the open core (its statistics: :mod:`esn_lens.attribution_stats`; activation
patching: :mod:`esn_lens.patching`, re-exported here).

AtP estimates, for every (layer, neuron) unit at once, what deactivating it would do to a metric: the first-order
change of zeroing a unit is ``-a * dM/da`` summed over positions. With the metric ``M`` = log-probability of the
true emotion's option minus the mean log-probability of the other options, ``a * dM/da`` is the unit's estimated
support for the right answer. :class:`AttributionStats` accumulates it per emotion, streaming (no per-token
tensors), and the ``atp`` selector ranks units by its mean over clips of each emotion.

Example::

    evaluator = SEREvaluator(lens, emotions, answer="word")            # the answers the model gives
    att = collect_attribution(lens, clips, emotions, evaluator=evaluator)   # one forward + backward per batch
    neurons = find_neurons(att, "atp", top_frac=0.02)
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from jaxtyping import Float, Int64
from torch import Tensor

from .attribution_stats import AttributionStats
from .errors import InputError
from .patching import align_positions, patch_activations  # noqa: F401  (re-exported: esn_lens.attribution's names)

__all__ = ["AttributionStats", "align_positions", "collect_attribution", "emotion_option_ids", "option_margin",
           "patch_activations", "record_attribution"]


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

    Example: ``att = collect_attribution(lens, clips, emotions, evaluator=SEREvaluator(lens, emotions, answer="word"))``.
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

