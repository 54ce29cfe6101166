"""Integrity checks of a statistics file: what :meth:`esn_lens.stats.NeuronStats.load` accepts from disk (a damaged
or hand-edited file is refused with one line naming it and what is wrong; nothing is silently repaired)."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .errors import CorruptFileError, IncompatibleError, InputError
from .vocab import SITES


def checked_file_stats(cls: type, path: Any, tensors: dict[str, Tensor], meta: dict[str, Any]) -> Any:
    """Rebuild ``cls`` (:class:`~esn_lens.stats.NeuronStats`) from a file's tensors and metadata, turning damaged
    metadata, dtypes, shapes, non-finite or negative values and impossible counts into :class:`CorruptFileError`."""

    known = {"emotions", "n_layers", "d_mlp", "site", "positions", "model_fingerprint", "adapter", "routed"}
    names = ("K", "T", "sum", "sumsq", "n_clips") + (("n_tokens",) if meta.get("routed") else ())
    missing = sorted({"emotions", "n_layers", "d_mlp"} - set(meta)) + sorted(n for n in names if n not in tensors)
    if missing:
        raise CorruptFileError(f"{path}: damaged stats file (missing {missing})")
    meta = {k: v for k, v in meta.items() if k in known}  # tolerate keys added by later versions
    wrong = {n: str(tensors[n].dtype) for n in names if tensors[n].dtype != torch.float64}
    if wrong:  # save() writes float64 only: another dtype is damage (uint8 counts would wrap 1086 -> 62)
        raise CorruptFileError(f"{path}: damaged stats file (tensors {wrong} are not torch.float64 as written)")
    try:
        s = cls.from_state_dict({"meta": meta, **tensors})
    except (IncompatibleError, InputError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise CorruptFileError(f"{path}: damaged stats file ({e})") from None
    if s.site not in SITES:
        raise CorruptFileError(f"{path}: damaged stats file (unknown site {s.site!r})")
    for n in names:
        t = getattr(s, n)
        if not bool(torch.isfinite(t).all()) or (n != "sum" and bool((t < 0).any())):
            raise CorruptFileError(f"{path}: damaged stats file (tensor {n} has NaN, inf or negative entries)")
    for n in ("K", "T", "n_clips") + names[5:]:
        t = getattr(s, n)
        if not bool((t == t.round()).all()):
            raise CorruptFileError(f"{path}: damaged stats file (tensor {n} holds counts but has non-integer entries)")
    over = (s.K > s.T) | (s.T > s.tokens.view(-1, 1, 1))
    if bool(over.any()):
        e, l, n = (int(i) for i in over.nonzero()[0])
        T = s.T.expand_as(s.K)
        raise CorruptFileError(
            f"{path}: damaged stats file (firing count K exceeds the token count T: K={int(s.K[e, l, n])} > "
            f"T={int(T[e, l, n])} for {s.emotions[e]!r} at layer {l}, neuron {n}; expected K <= T <= tokens)")
    tok = s.tokens
    bad = ((tok > 0) & (s.n_clips == 0)) | (s.n_clips > tok)  # a clip is counted when it gives >= 1 token
    if bool(bad.any()):
        e = int(bad.nonzero()[0])
        raise CorruptFileError(f"{path}: damaged stats file ({int(tok[e])} tokens counted for {s.emotions[e]!r} "
                               f"from n_clips={int(s.n_clips[e])} clips; expected 1 <= n_clips <= T where T > 0)")
    return s
