"""Configuration of the tiny Kimi-Audio stand-in: a Qwen2 config plus Kimi-Audio's own fields."""
from transformers import Qwen2Config


class KimiAudioConfig(Qwen2Config):
    """Qwen2 text stack + ``kimia_*`` fields (mimo branch, Whisper-feature adaptor, audio-token offset)."""

    model_type = "kimi_audio"

    def __init__(self, kimia_mimo_layers: int = 1, kimia_mimo_transformer_from_layer_index: int = 0,
                 kimia_adaptor_input_dim: int = 64, use_whisper_feature: bool = True, kimia_token_offset: int = 320,
                 kimia_media_begin: int | None = None, kimia_media_end: int | None = None, **kwargs):
        self.kimia_mimo_layers = kimia_mimo_layers
        self.kimia_mimo_transformer_from_layer_index = kimia_mimo_transformer_from_layer_index
        self.kimia_adaptor_input_dim = kimia_adaptor_input_dim
        self.use_whisper_feature = use_whisper_feature
        self.kimia_token_offset = kimia_token_offset
        self.kimia_media_begin = kimia_media_begin
        self.kimia_media_end = kimia_media_end
        super().__init__(**kwargs)
