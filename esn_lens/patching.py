"""Activation patching on the open core: a site's value taken from one batch into another's forward (two invokes of one
trace). Example: ``patch_activations(lens, happy_batch, sad_batch, "blocks.1.hook_resid_post", align="audio")``."""
from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from .errors import InputError


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
