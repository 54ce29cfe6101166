"""An independent plain-torch re-implementation of a Qwen3-Omni MoE block, token by token, for the MoE tests.

It reads only the block's weights (router ``gate.weight``, ``experts.gate_up_proj``, ``experts.down_proj``) and
recomputes routing (softmax, top-k, renormalisation) and every routed expert's units with its own loops, so it
shares no code with esn_lens (nor with transformers' experts implementations). Installed on a model with a plain
torch forward hook that replaces the block's output.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F


def ref_block(block, x: torch.Tensor, layer: int, edit: Callable | None = None, record: Callable | None = None):
    """The block's output for input ``x`` (batch, pos, hidden); ``edit(layer, expert, act) -> act`` changes a routed
    expert's activation vector; ``record(layer, token, expert, act, probs)`` sees it (token = row * pos + position)."""
    gw = block.gate.weight
    k, norm = int(block.gate.top_k), bool(block.gate.norm_topk_prob)
    W_gu, W_d = block.experts.gate_up_proj, block.experts.down_proj
    I = W_gu.shape[1] // 2
    B, P, H = x.shape
    flat = x.reshape(-1, H)
    out = torch.zeros_like(flat)
    for n in range(flat.shape[0]):
        probs = torch.softmax((gw @ flat[n]).float(), dim=-1)
        val, idx = torch.topk(probs, k)
        if norm:
            val = val / val.sum()
        for j in range(k):
            e = int(idx[j])
            g = W_gu[e, :I] @ flat[n]
            u = W_gu[e, I:] @ flat[n]
            a = F.silu(g)
            if edit is not None:
                a = edit(layer, e, a)
            if record is not None:
                record(layer, n, e, a, probs)
            out[n] = out[n] + (W_d[e] @ (a * u)) * val[j].to(flat.dtype)
    return out.view(B, P, H)


def install_reference(model, edit: Callable | None = None, record: Callable | None = None) -> list:
    """Replace every MoE block's output of a (not lensed) thinker by :func:`ref_block`; returns the hook handles."""
    handles = []
    for layer, dec in enumerate(model.model.language_model.layers):
        def hook(mod, args, out, layer=layer):
            return ref_block(mod, args[0], layer, edit, record)
        handles.append(dec.mlp.register_forward_hook(hook))
    return handles


def gain_edit(units: torch.Tensor, gain: float, d_expert: int) -> Callable:
    """``edit`` multiplying the chosen (layer, unit) units of each routed expert by ``gain``."""
    def edit(layer, e, a):
        m = units[layer, e * d_expert:(e + 1) * d_expert].to(a.device)
        return torch.where(m, a * gain, a)
    return edit


class LoopStats:
    """K, T, sum, sumsq per (emotion, layer, unit) and router counts per (emotion, layer, expert), in float64
    Python/numpy loops over the routed (token, expert) pairs at counted positions."""

    def __init__(self, counted: np.ndarray, emotion_of_row: list[int], E: int, L: int, X: int, I: int):
        self.counted, self.rows, self.I = counted, emotion_of_row, I
        P = counted.shape[1]
        self.P = P
        self.K = np.zeros((E, L, X * I))
        self.T = np.zeros((E, L, X * I))
        self.S = np.zeros((E, L, X * I))
        self.Q = np.zeros((E, L, X * I))
        self.counts = np.zeros((E, L, X))
        self.prob_sum = np.zeros((E, L, X))
        self._probs_seen: set = set()

    def __call__(self, layer, n, e, a, probs):
        r, p = divmod(n, self.P)
        if not self.counted[r, p]:
            return
        emo, I = self.rows[r], self.I
        v = a.detach().double().numpy()
        sl = slice(e * I, (e + 1) * I)
        self.K[emo, layer, sl] += v > 0
        self.T[emo, layer, sl] += 1
        self.S[emo, layer, sl] += v
        self.Q[emo, layer, sl] += v * v
        self.counts[emo, layer, e] += 1
        if (layer, n) not in self._probs_seen:
            self._probs_seen.add((layer, n))
            self.prob_sum[emo, layer] += probs.detach().double().numpy()
