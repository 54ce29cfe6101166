"""Shared test set-up: offline hub, deterministic threads, cached tiny real models."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import functools  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

AUDIO_FAMILIES = ("qwen2_audio", "qwen2_5_omni_thinker", "audio_flamingo3")
TEXT_FAMILIES = ("qwen2", "llama")  # kimi_audio: its own tests (tests/test_kimi_audio.py)


@functools.lru_cache(maxsize=None)
def _tiny(family: str, seed: int = 0):
    from esn_lens.testing import build_tiny

    return build_tiny(family, seed=seed)


@pytest.fixture
def tiny():
    """``tiny(family)`` -> (model, processor), built once per session (do not modify the returned model)."""
    return _tiny
