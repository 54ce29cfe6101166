"""Expert neurons of mixture-of-experts decoders: an exact per-expert forward with dense unit sites.

A sparse MoE layer (router + fused experts, e.g. Qwen3-Omni's ``SparseMoeBlock``) has no module per expert and,
in transformers' batched or grouped experts implementations, no per-expert activation call to hook. esn_lens runs
such a layer through :func:`exact_moe_forward` instead (installed once by the adapter, with one log line naming
the implementation it replaces): the same routing and the same per-expert arithmetic as transformers' eager loop,
with the expert units exposed as dense views through identity modules (:class:`HookPoint`):

==================================  ======================================================================
``mlp.hook_router``                 router probabilities (batch, pos, n_experts), softmax over all experts (read-only)
``mlp.hook_route``                  routing weights (batch, pos, n_experts): the top-k weights, exactly 0 where the
                                    expert is not routed; editing a routed weight rescales that expert's output
``mlp.experts.hook_pre``            gate projection (batch, pos, n_experts * d_expert)
``mlp.experts.hook_act``            activation act_fn(gate)
``mlp.experts.hook_post``           down-projection input act_fn(gate) * up
==================================  ======================================================================

Unit ``u`` of a layer is ``(expert, neuron) = divmod(u, d_expert)`` (flattened ``expert * d_expert + neuron``).
Entries of experts a token is not routed to are exactly 0 (``routed_mask`` tells them apart from a routed 0);
only routed entries reach the layer's output, so an edit changes a unit only on the tokens routed to its expert.
Gradients flow through all three unit sites (attribution patching works).
"""
from __future__ import annotations

import logging
import types
from typing import Any

import torch
from jaxtyping import Bool
from torch import Tensor, nn

from .errors import InputError

log = logging.getLogger("esn_lens.moe")

_EXACT_CLASSES: dict[type, type] = {}


class HookPoint(nn.Module):
    """An identity module: its output is a named site (readable and editable with nnsight or torch hooks)."""

    def forward(self, x: Tensor) -> Tensor:
        return x


def _dense_units(n: int, n_experts: int, d_expert: int, like: Tensor) -> Tensor:
    return torch.zeros(n, n_experts, d_expert, dtype=like.dtype, device=like.device)


def exact_moe_forward(self: nn.Module, hidden_states: Tensor) -> Tensor:
    """The MoE block's forward (``self``: a router ``gate`` + fused ``experts`` block with hook points installed).

    Same routing (``self.gate``) and per-expert arithmetic as transformers' eager experts loop
    (``linear(x, gate_up_proj[e])`` split into gate and up, ``act_fn(gate) * up``, ``linear(., down_proj[e])``
    times the routing weight, summed over the token's experts), whatever ``config._experts_implementation`` says.
    """
    experts = self.experts
    B, P, H = hidden_states.shape
    flat = hidden_states.reshape(-1, H)
    N, X, I = flat.shape[0], experts.num_experts, experts.intermediate_dim
    router_logits, top_w, top_i = self.gate(flat)
    routed = torch.zeros(N, X, dtype=torch.bool, device=flat.device).scatter_(1, top_i, True)
    self._esn_routed = routed.view(B, P, X)  # read by routing-aware recorders during this call
    self.hook_router(torch.softmax(router_logits, dim=-1, dtype=torch.float).view(B, P, X))
    route = torch.zeros(N, X, dtype=top_w.dtype, device=flat.device).scatter(1, top_i, top_w)
    route = self.hook_route(route.view(B, P, X)).reshape(N, X)
    hit = routed.any(0).nonzero().flatten().tolist()
    tokens = {e: routed[:, e].nonzero().flatten() for e in hit}
    gate = _dense_units(N, X, I, flat)
    up = _dense_units(N, X, I, flat)
    for e in hit:
        g, u = nn.functional.linear(flat[tokens[e]], experts.gate_up_proj[e]).chunk(2, dim=-1)
        gate[tokens[e], e] = g
        up[tokens[e], e] = u
    gate = experts.hook_pre(gate.view(B, P, X * I)).reshape(N, X, I)
    act = torch.where(routed[:, :, None], experts.act_fn(gate), torch.zeros((), dtype=gate.dtype, device=gate.device))
    act = experts.hook_act(act.view(B, P, X * I)).reshape(N, X, I)
    post = experts.hook_post((act * up).view(B, P, X * I)).reshape(N, X, I)
    out = torch.zeros_like(flat)
    for e in hit:
        t = tokens[e]
        h = nn.functional.linear(post[t, e], experts.down_proj[e]) * route[t, e, None]
        out.index_add_(0, t, h.to(out.dtype))
    return out.view(B, P, H)


def _exact_class(cls: type) -> type:
    """A subclass of the block's class whose forward is :func:`exact_moe_forward` (one per original class)."""
    if getattr(cls, "_esn_exact", False):
        return cls
    if cls not in _EXACT_CLASSES:
        _EXACT_CLASSES[cls] = type(cls.__name__, (cls,), {"forward": exact_moe_forward, "_esn_exact": True,
                                                          "__module__": cls.__module__})
    return _EXACT_CLASSES[cls]


def is_moe_block(mlp: nn.Module) -> bool:
    """Whether a layer's MLP is a router (``gate``) + fused experts (``experts.gate_up_proj``/``down_proj``) block."""
    ex = getattr(mlp, "experts", None)
    return (hasattr(mlp, "gate") and ex is not None and hasattr(ex, "gate_up_proj") and hasattr(ex, "down_proj")
            and hasattr(ex, "act_fn"))


def install_exact_moe(blocks: list[nn.Module], model_name: str = "model") -> bool:
    """Run every block through :func:`exact_moe_forward` with its hook points (idempotent); True if anything changed.

    Logs once which experts implementation was replaced. The weights and the state dict are untouched (hook points
    have no parameters), so ``save_pretrained`` writes the same checkpoint.
    """
    changed = False
    impl = None
    for mlp in blocks:
        if not is_moe_block(mlp):
            raise InputError(f"{type(mlp).__name__} is not a router + fused-experts MoE block")
        if getattr(type(mlp), "_esn_exact", False) and hasattr(mlp, "hook_route"):
            continue
        impl = getattr(getattr(mlp.experts, "config", None), "_experts_implementation", None) or "eager"
        for name in ("hook_router", "hook_route"):
            mlp.add_module(name, HookPoint())
        for name in ("hook_pre", "hook_act", "hook_post"):
            mlp.experts.add_module(name, HookPoint())
        mlp.__class__ = _exact_class(type(mlp))
        if hasattr(mlp, "_old_forward"):  # accelerate's device-map hooks call the forward saved here
            mlp._old_forward = types.MethodType(exact_moe_forward, mlp)
        changed = True
    if changed:
        from .logs import ensure_handler

        ensure_handler()  # the line reaches stderr even when the user configured no logging
        log.info("esn_lens: %s: %d MoE layers now run esn_lens's exact per-expert path (experts implementation "
                 "%r replaced; same routing and arithmetic as the eager loop) so that expert units are recorded "
                 "and edited exactly", model_name, len(blocks), impl)
    return changed


def routed_mask(block: nn.Module) -> Bool[Tensor, "batch pos n_experts"]:
    """Which experts each token of the block's latest call was routed to (True: routed)."""
    m = getattr(block, "_esn_routed", None)
    if m is None:
        raise InputError("this MoE block has not run yet (or does not run esn_lens's exact path)")
    return m


def unit_expert(units: Tensor | int, d_expert: int) -> Any:
    """The expert of flattened unit index ``units`` (``unit // d_expert``)."""
    return units // d_expert


def route_site(lens: Any, layer: int, which: str = "route") -> Any:
    """The routing site of ``layer`` inside a trace: ``"route"`` (batch, pos, n_experts) top-k weights, 0 where not
    routed, or ``"router"`` (batch, pos, n_experts) router probabilities; inside a trace e.g. ``route_site(lens, 0).save()``."""
    from .sites import Site, envoy_at

    path_of = getattr(lens.adapter, "route_path", None)
    if path_of is None:
        raise InputError(f"{lens.adapter.name}: not a mixture-of-experts model (no routing sites)")
    if not 0 <= layer < lens.n_layers:
        raise InputError(f"layer {layer} out of range 0..{lens.n_layers - 1}")
    name = f"blocks.{layer}.mlp.hook_{which}"
    try:  # a lens whose site table has the routing rows
        return lens.site(name)
    except (InputError, KeyError):
        return Site(name, envoy_at(lens.nn, path_of(layer, which)), "output")


def _block(lens: Any, layer: int) -> Any:
    return lens.adapter.mlp_module(layer)


def route_count_hooks(stats: Any, model: Any, scope: Any, weights: Tensor) -> list[tuple[Any, Any]]:
    """The ``(site, fn)`` hooks that add each layer's routed-token counts (prefill only) of ``scope``'s rows into
    routed ``stats.T`` (see :meth:`NeuronStats.add_route`): one per layer, at the layer's routing site."""
    out = []
    for layer in range(stats.n_layers):
        done = [False]
        block = _block(model, layer)

        def fn(value: Tensor, layer: int = layer, done: list = done, block: Any = block) -> None:
            if not done[0]:
                done[0] = True
                stats.add_route(layer, scope.rows(routed_mask(block)), weights)
            return None

        out.append((route_site(model, layer), fn))
    return out


def attach_op(lens: Any, op: Any, batch: Any = None) -> None:
    """Attach a library operation ``op(lens, scope) -> [(site, fn), ...]`` to the running trace (``lens.attach``)."""
    lens.attach(op, batch)


def scope_batch(scope: Any, what: str) -> Any:
    """The (padded) batch of an operation's scope, refused with one line naming ``what`` when there is none."""
    return scope.need_batch(what)
