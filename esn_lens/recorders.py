"""Recorders: library operations that read a site and keep something (a pooled probe, a cached copy). Like edits and
statistics they only *produce* ``(site, fn)`` hooks for the rows of a :class:`~esn_lens.batch.Scope`; the trace
attaches them (:meth:`esn_lens.tracing.TraceState.attach`)."""
from __future__ import annotations

from typing import Any, Callable

import torch
from jaxtyping import Bool
from torch import Tensor

from .batch import ProbeRecord, Scope
from .errors import InputError
from .sites import Site

POOLINGS = ("last", "mean_audio", "mean", "none")


def probe_hooks(site: Site, pooling: "str | Bool[Tensor, 'batch pos']", scope: Scope
                ) -> tuple[ProbeRecord, list[tuple[Site, Callable[[Tensor], None]]]]:
    """A :class:`ProbeRecord` and the hook filling it with ``site``'s value pooled over positions at the prefill:
    (batch, d) float32 on the CPU, or (batch, pos, d) for ``"none"``. Example: see :meth:`esn_lens.Lens.probe`."""
    if isinstance(pooling, Tensor):
        m = scope.need_batch("probe with a pooling mask").masks
        weights = pooling.to(torch.bool)
        if tuple(weights.shape) != tuple(m.padding.shape):
            raise InputError(f"probe: pooling mask has shape {tuple(weights.shape)}, the batch is {tuple(m.padding.shape)}")
    elif pooling in POOLINGS:
        if pooling == "none":
            weights = None
        else:
            m = scope.need_batch(f"probe with pooling={pooling!r}").masks
            weights = {"last": m.last_token, "mean_audio": lambda: m.select("audio"), "mean": lambda: m.valid}[pooling]()
    else:
        raise InputError(f"probe: unknown pooling {pooling!r}; expected {', '.join(POOLINGS)} or a (batch, pos) mask")
    rec = ProbeRecord(site.name, pooling if isinstance(pooling, str) else "mask")

    def fn(value: Tensor) -> None:
        if rec.value is not None:  # prefill only (generation calls the module again per token)
            return None
        v = scope.rows(value).detach().float()
        if weights is not None and (v.ndim != 3 or v.shape[1] != weights.shape[1]):
            raise InputError(f"probe {site.name}: pooling {rec.pooling!r} is over the batch's {weights.shape[1]} token "
                             f"positions, this site's value has shape {tuple(v.shape)}; use pooling='none'")
        if weights is None:
            rec.value = v.cpu()
        else:
            w = weights.to(v.device, torch.float32)
            rec.value = (torch.einsum("bp,bpd->bd", w, v) / w.sum(1, keepdim=True).clamp(min=1)).cpu()
        return None

    return rec, [(site, fn)]


def cache_hooks(sites: list[Site], cache: dict[str, Tensor], keep: set[str],
                on_value: Callable[[str, Tensor], Any] | None = None, scope: Scope | None = None
                ) -> list[tuple[Site, Callable[[Tensor], None]]]:
    """Hooks copying each site's prefill value (the scope's rows) into ``cache[site.name]`` (CPU clones) when its name
    is in ``keep``, and calling ``on_value(name, value)`` with the live tensor."""
    out = []
    for st in sites:
        done = [False]

        def fn(value: Tensor, name: str = st.name, done: list = done) -> None:
            if done[0]:  # prefill only
                return None
            done[0] = True
            v = value if scope is None else scope.rows(value)
            if name in keep:
                cache[name] = v.detach().to("cpu", copy=True)
            if on_value is not None:
                on_value(name, v)
            return None

        out.append((st, fn))
    return out
