"""Model identity: what makes two models "the same model" for saved statistics and neuron sets.

Decision (issue #23): the same architecture **and the same trained weights at bfloat16 precision**. A model and its
reloaded copy in float32 or bfloat16 share the fingerprint; a fine-tuned copy does not, as soon as any sampled
weight moves by more than bfloat16's rounding (about 0.4 %), even when every sign stays the same. A float16 copy of
a float32 checkpoint may round some weights differently and then counts as another model; neuron sets and
statistics can still be carried over on purpose (``validate --neurons ... --allow-other-model``, recorded).
"""
from __future__ import annotations

import hashlib

import torch
from torch import nn

#: values sampled (evenly spaced) from every parameter tensor
SAMPLES_PER_TENSOR = 16


def weights_signature(model: nn.Module, samples: int = SAMPLES_PER_TENSOR) -> str:
    """A short hash of ``samples`` evenly spaced values of every parameter, rounded to bfloat16, with the shapes.

    Independent of parameter order and names (a wrapper such as TransformerLens's bridge renames modules) and of the
    dtype among float32/bfloat16; meta (not loaded) tensors contribute only their shape.

    Example: ``weights_signature(model) == weights_signature(copy.deepcopy(model).to(torch.bfloat16))``.
    """
    rows: list[bytes] = []
    with torch.no_grad():
        for p in model.parameters():
            head = f"{tuple(p.shape)}|".encode()
            if p.device.type == "meta" or p.numel() == 0:
                rows.append(head)
                continue
            flat = p.detach().reshape(-1)
            k = min(samples, flat.numel())
            idx = torch.arange(k, device=flat.device) * (flat.numel() - 1) // max(k - 1, 1)
            vals = flat[idx].to(torch.bfloat16).view(torch.int16).cpu().numpy().tobytes()
            rows.append(head + vals)
    h = hashlib.sha256()
    for r in sorted(rows):
        h.update(r)
    return h.hexdigest()[:16]


__all__ = ["weights_signature", "SAMPLES_PER_TENSOR"]
