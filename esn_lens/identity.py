"""Model identity: what makes two models "the same model" for saved statistics and neuron sets.

Decision (issue #23): the same architecture **and the same trained weights at bfloat16 precision**. A model and its
reloaded copy in float32 or bfloat16 share the fingerprint; a fine-tuned copy does not, as soon as any sampled
weight moves by more than bfloat16's rounding (about 0.4 %), even when every sign stays the same. A float16 copy of
a float32 checkpoint may round some weights differently and then counts as another model; neuron sets and
statistics can still be carried over on purpose (``validate --neurons ... --allow-other-model``, recorded).
"""
from __future__ import annotations

import hashlib
import weakref

import torch
from torch import nn

#: values sampled (evenly spaced) from every parameter tensor
SAMPLES_PER_TENSOR = 16
#: model -> (key of its parameter tensors and their in-place version counters, signature): recomputed after any change
_CACHE: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()


def weights_signature(model: nn.Module, samples: int = SAMPLES_PER_TENSOR) -> str:
    """A short hash of ``samples`` evenly spaced values of every parameter, rounded to bfloat16, with the shapes.

    Independent of parameter order and names (a wrapper such as TransformerLens's bridge renames modules) and of the
    dtype among float32/bfloat16; meta (not loaded) tensors contribute only their shape.

    Example: ``weights_signature(model) == weights_signature(copy.deepcopy(model).to(torch.bfloat16))``.
    """
    params = list(model.parameters())
    key = (samples, tuple((p.data_ptr(), p._version, p.dtype, p.device, tuple(p.shape)) for p in params))
    cached = _CACHE.get(model)
    if cached is not None and cached[0] == key:  # same tensors, none modified in place since (torch's version counter)
        return cached[1]
    heads: list[bytes] = []
    picked: list[torch.Tensor] = []
    with torch.no_grad():
        for p in params:
            heads.append(f"{tuple(p.shape)}|".encode())
            if p.device.type == "meta" or p.numel() == 0:
                picked.append(torch.zeros(0, dtype=torch.bfloat16))
                continue
            flat = p.detach().reshape(-1)
            k = min(samples, flat.numel())
            idx = torch.arange(k, device=flat.device) * (flat.numel() - 1) // max(k - 1, 1)
            picked.append(flat[idx].to(torch.bfloat16))
        by_device: dict[torch.device, list[int]] = {}  # one copy to the CPU per device, not one per tensor
        for i, v in enumerate(picked):
            by_device.setdefault(v.device, []).append(i)
        for dev, where in by_device.items():
            if dev.type != "cpu":
                host = torch.cat([picked[i] for i in where]).cpu().split([picked[i].numel() for i in where])
                for i, v in zip(where, host):
                    picked[i] = v
    rows = [head + v.view(torch.int16).numpy().tobytes() for head, v in zip(heads, picked)]
    h = hashlib.sha256()
    for r in sorted(rows):
        h.update(r)
    sig = h.hexdigest()[:16]
    try:
        _CACHE[model] = (key, sig)
    except TypeError:  # pragma: no cover - a module that cannot be weakly referenced
        pass
    return sig


__all__ = ["weights_signature", "SAMPLES_PER_TENSOR"]
