"""Tiny real models (real transformers classes, tiny configs) for tests, tutorials and benchmarks."""
from .planted import build_planted, planted_clips
from .tiny import TINY_FAMILIES, build_tiny, build_tokenizer, tiny_audio

__all__ = ["build_planted", "planted_clips", "TINY_FAMILIES", "build_tiny", "build_tokenizer", "tiny_audio"]
