"""Tiny real models (real transformers classes, tiny configs) for tests, tutorials and benchmarks."""
from .tiny import TINY_FAMILIES, build_tiny, build_tokenizer, tiny_audio

__all__ = ["TINY_FAMILIES", "build_tiny", "build_tokenizer", "tiny_audio"]
