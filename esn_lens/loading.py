"""Loading real checkpoints (local folders or hub ids) with their processors, offline-friendly."""
from __future__ import annotations

from typing import Any

import torch

from .errors import InputError, UnsupportedModelError

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
           "bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "auto": "auto"}


def parse_dtype(dtype: str | torch.dtype | None):
    """``"bf16"`` -> ``torch.bfloat16``; None stays None; unknown names get a clear error."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise InputError(f"unknown dtype {dtype!r}; expected one of {sorted(_DTYPES)}")
    return _DTYPES[dtype]


def _model_class(config) -> Any:
    import transformers

    for arch in getattr(config, "architectures", None) or []:
        cls = getattr(transformers, arch, None)
        if cls is not None:
            return cls
    return None


def load_processor(path: str, config: Any, trust_remote_code: bool = False) -> Any:
    """The processor of a checkpoint, loaded by the adapter of its family (e.g. Qwen2.5-Omni's audio-only one)."""
    from .adapters import adapter_class_for_config

    return adapter_class_for_config(config).load_processor(path, trust_remote_code=trust_remote_code)


def load_model_and_processor(path_or_id: str, *, dtype=None, device: str | None = None, device_map=None,
                             trust_remote_code: bool = False, **kwargs) -> tuple[Any, Any]:
    """Load ``(model, processor)``: the class named in the config's ``architectures`` (or AutoModelForCausalLM)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(path_or_id, trust_remote_code=trust_remote_code)
    except OSError as e:
        raise InputError(f"cannot load a model config from {path_or_id!r} ({e})") from None
    from .adapters import adapter_class_for_config

    prepared = adapter_class_for_config(config).prepare_config(config)
    cls = _model_class(config)
    archs = list(getattr(config, "architectures", None) or [])
    if cls is None and archs and not trust_remote_code:
        import warnings

        warnings.warn(f"{path_or_id}: architecture {', '.join(archs)} is not a transformers class; loading it as a "
                      "generic causal LM (AutoModelForCausalLM). Pass trust_remote_code=True (--trust-remote-code) for "
                      "the checkpoint's own code (e.g. Kimi-Audio)", stacklevel=2)
    cls = cls or AutoModelForCausalLM
    kw: dict[str, Any] = dict(trust_remote_code=trust_remote_code, **kwargs)
    if dtype is not None:
        kw["dtype"] = parse_dtype(dtype)
    if device_map is not None:
        kw["device_map"] = device_map
    if prepared is not config:
        kw["config"] = prepared
    try:
        model = cls.from_pretrained(path_or_id, **kw)
    except (ValueError, TypeError) as e:
        raise UnsupportedModelError(f"cannot load {path_or_id!r} as {cls.__name__}: {e}") from None
    if device is not None and device_map is None:
        model = model.to(device)
    processor = load_processor(path_or_id, config, trust_remote_code)
    return model.eval(), processor
