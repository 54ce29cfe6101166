"""Gemma 3n without its vision tower: a registered stand-in for ``Gemma3nModel.vision_tower``.

``Gemma3nModel`` always builds ``AutoModel.from_config(config.vision_config)``, a timm ``TimmWrapperModel`` (MobileNetV5)
that needs timm and torchvision. esn_lens reads audio and text only, so it registers -- the way a user registers a
custom model, a new ``model_type``, nothing of transformers overridden -- :class:`NoVisionConfig` (a
``Gemma3nVisionConfig`` keeping the fields ``Gemma3nMultimodalEmbedder`` reads: ``hidden_size``, ``vocab_size``,
``vocab_offset``, ``rms_norm_eps``) and :class:`NoVisionTower` (no weights; one clear error if images are given).
The image token embedding (``model.embed_vision``) is kept and loaded as usual.
"""
from __future__ import annotations

import functools
from typing import Any

from ..errors import UnsupportedModelError

NO_VISION_TYPE = "esn_lens_gemma3n_no_vision"
NO_IMAGES = ("Gemma 3n under esn_lens has no vision tower (its timm MobileNetV5 is not loaded: audio and text only); "
             "give audio and text, no pixel_values")


@functools.lru_cache(maxsize=None)
def no_vision_classes() -> tuple[type, type]:
    """``(NoVisionConfig, NoVisionTower)``, registered with ``AutoConfig`` / ``AutoModel`` on first use."""
    from transformers import AutoConfig, AutoModel, Gemma3nVisionConfig, PreTrainedConfig, PreTrainedModel

    class NoVisionConfig(Gemma3nVisionConfig):
        """``Gemma3nVisionConfig`` whose model is :class:`NoVisionTower` (no timm: the vision tower is not built)."""

        model_type = NO_VISION_TYPE

        @classmethod
        def from_dict(cls, config_dict: dict[str, Any], **kwargs):
            """The plain config loader (``Gemma3nVisionConfig.from_dict`` asks timm for ImageNet labels)."""
            return PreTrainedConfig.from_dict.__func__(cls, config_dict, **kwargs)

    class NoVisionTower(PreTrainedModel):
        """Gemma 3n's vision tower left out: no weights; calling it (images given) raises one clear error."""

        config_class = NoVisionConfig
        base_model_prefix = "no_vision"
        main_input_name = "pixel_values"

        def __init__(self, config: NoVisionConfig):
            super().__init__(config)
            self.post_init()

        def forward(self, pixel_values=None, **kwargs):
            raise UnsupportedModelError(NO_IMAGES)

    for c in (NoVisionConfig, NoVisionTower):
        c.__module__ = __name__
    AutoConfig.register(NO_VISION_TYPE, NoVisionConfig)
    AutoModel.register(NoVisionConfig, NoVisionTower)
    return NoVisionConfig, NoVisionTower


def timm_available() -> bool:
    """Whether the real vision tower (timm) can be built."""
    try:
        import timm  # noqa: F401
    except ImportError:
        return False
    return True


def without_vision_tower(config: Any) -> Any:
    """A copy of ``config`` (a ``Gemma3nConfig``) whose vision config is a :class:`NoVisionConfig` of the same embedder
    fields (the checkpoint's vision tower weights are then not loaded); ``config`` itself if it has one already."""
    import copy

    cls, _ = no_vision_classes()
    v = config.vision_config
    if isinstance(v, cls):
        return config
    config = copy.deepcopy(config)
    config.vision_config = cls(hidden_size=v.hidden_size, vocab_size=v.vocab_size, vocab_offset=v.vocab_offset,
                               rms_norm_eps=v.rms_norm_eps, initializer_range=v.initializer_range)
    return config
