"""Adapters: one file per model family, each registering itself exactly like a user's adapter would."""
from .base import (ADAPTERS, SITE_ORDER, SITES, Adapter, SiteRow, PositionMasks, adapter_class_for_config, adapter_for, check_site,
                   hook_name, parse_hook_name, register_adapter)
from . import qwen2_audio, qwen_omni, qwen3_omni_moe, audio_flamingo3, kimi_audio, music_flamingo, glm_asr, qwen3_asr, voxtral, phi4_multimodal, granite_speech, gemma3n, gemma4, moss_transcribe_diarize  # noqa: E402,F401  (register built-ins)
from . import bridge  # noqa: E402,F401  (TransformerLens TransformerBridge backend)
from . import text_lm  # noqa: E402,F401  (generic fallback, registered last)



def __getattr__(name: str):
    """``AudioOnlyOmniProcessor`` (Qwen2.5-Omni processor for audio and text only), built on first use."""
    if name == "AudioOnlyOmniProcessor":
        return qwen_omni.audio_only_omni_processor_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ADAPTERS", "AudioOnlyOmniProcessor", "SITE_ORDER", "SITES", "Adapter", "SiteRow", "PositionMasks", "adapter_class_for_config", "adapter_for", "check_site", "hook_name",
           "parse_hook_name", "register_adapter"]
