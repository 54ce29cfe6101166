"""A tiny re-implementation of Kimi-Audio's forward (``MoonshotKimiaForCausalLM``) with eager attention.

Written from the description of the release (not copied): two token streams of equal length (``input_ids`` =
audio stream, ``text_input_ids`` = text stream), Whisper features through ``vq_adaptor`` on the continuous
positions (``(embed + adaptor(feature)) * sqrt(2)``), the text stream's embedding added when it is not all
zeros, Qwen2 decoder layers, a mimo branch copied after layer ``kimia_mimo_transformer_from_layer_index``
(``mimo_layers`` -> ``mimo_norm`` -> ``mimo_output``: audio tokens), and logits as the pair (audio, text).
Like the release, the embedding path handles one row (batch size 1).
"""
import math
from dataclasses import dataclass

import torch
from torch import nn
from transformers.cache_utils import DynamicCache
from transformers.masking_utils import create_causal_mask
from transformers.models.qwen2.modeling_qwen2 import (Qwen2DecoderLayer, Qwen2PreTrainedModel, Qwen2RMSNorm,
                                                      Qwen2RotaryEmbedding)

from .configuration_moonshot_kimia import KimiAudioConfig


@dataclass
class KimiaCausalLMOutput:
    """``logits`` = (audio_logits, text_logits); ``past_key_values`` = the cache of text and mimo layers."""

    logits: tuple | None = None
    past_key_values: object = None


class VQAdaptor(nn.Module):
    """Whisper features (stacked frames) -> hidden: Linear, SiLU, Dropout(0), Linear, LayerNorm."""

    def __init__(self, config: KimiAudioConfig):
        super().__init__()
        h = config.hidden_size
        self.layers = nn.Sequential(nn.Linear(config.kimia_adaptor_input_dim, h, bias=True), nn.SiLU(), nn.Dropout(0.0),
                                    nn.Linear(h, h, bias=True), nn.LayerNorm(h, eps=1e-5, bias=True))

    def forward(self, x):
        return self.layers(x)


class MoonshotKimiaPreTrainedModel(Qwen2PreTrainedModel):
    config_class = KimiAudioConfig
    config: KimiAudioConfig


class MoonshotKimiaModel(MoonshotKimiaPreTrainedModel):
    def __init__(self, config: KimiAudioConfig):
        super().__init__(config)
        L = config.num_hidden_layers
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList([Qwen2DecoderLayer(config, i) for i in range(L)])
        self.norm = Qwen2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.mimo_layers = nn.ModuleList([Qwen2DecoderLayer(config, j) for j in range(config.kimia_mimo_layers)])
        for j, layer in enumerate(self.mimo_layers):  # their own cache slots, after the text layers'
            layer.self_attn.layer_idx = L + j
        self.mimo_norm = Qwen2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = Qwen2RotaryEmbedding(config)
        if config.use_whisper_feature:
            self.vq_adaptor = VQAdaptor(config)
        self.post_init()

    def embed(self, input_ids, text_input_ids=None, whisper_input_feature=None, is_continuous_mask=None):
        """The input embeddings of one row (batch size 1, as in the release)."""
        emb = self.embed_tokens(input_ids)
        if whisper_input_feature is not None and is_continuous_mask is not None and bool(is_continuous_mask.any()):
            feats = torch.cat([f.reshape(-1, f.shape[-1]) for f in whisper_input_feature], 0)
            mask = is_continuous_mask[0].bool()
            assert feats.shape[0] == int(mask.sum()), "continuous positions and feature rows differ in number"
            adapted = self.vq_adaptor(feats.to(emb.dtype))
            mixed = emb[0].clone()
            mixed[mask] = (emb[0, mask] + adapted) * math.sqrt(2.0)
            emb = mixed.unsqueeze(0)
        if text_input_ids is not None and bool(text_input_ids.sum() != 0):
            emb = emb + self.embed_tokens(text_input_ids)
        return emb

    def forward(self, input_ids=None, text_input_ids=None, whisper_input_feature=None, is_continuous_mask=None,
                attention_mask=None, position_ids=None, past_key_values=None, inputs_embeds=None, use_cache=None,
                **kwargs):
        if inputs_embeds is None:
            inputs_embeds = self.embed(input_ids, text_input_ids, whisper_input_feature, is_continuous_mask)
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if use_cache and past_key_values is None:
            past_key_values = DynamicCache()
        if position_ids is None:
            past = past_key_values.get_seq_length() if past_key_values is not None else 0
            position_ids = (torch.arange(inputs_embeds.shape[1], device=inputs_embeds.device) + past).unsqueeze(0)
        mask = create_causal_mask(config=self.config, inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                  cache=past_key_values, position_ids=position_ids)
        rope = self.rotary_emb(inputs_embeds, position_ids)
        hidden, mimo_hidden = inputs_embeds, None
        layer_kw = dict(attention_mask=mask, position_embeddings=rope, position_ids=position_ids,
                        cache=past_key_values, use_cache=use_cache)
        for i, layer in enumerate(self.layers):
            hidden = layer(hidden, **layer_kw)
            if i == self.config.kimia_mimo_transformer_from_layer_index:
                mimo_hidden = hidden.clone()
        hidden = self.norm(hidden)
        for layer in self.mimo_layers:
            mimo_hidden = layer(mimo_hidden, **layer_kw)
        return hidden, self.mimo_norm(mimo_hidden), past_key_values


class MoonshotKimiaForCausalLM(MoonshotKimiaPreTrainedModel):
    """Kimi-Audio: text stack ``model.layers`` -> ``lm_head`` (text); mimo branch -> ``mimo_output`` (audio)."""

    _tied_weights_keys = {}

    def __init__(self, config: KimiAudioConfig):
        super().__init__(config)
        self.model = MoonshotKimiaModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.mimo_output = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def forward(self, input_ids=None, text_input_ids=None, whisper_input_feature=None, is_continuous_mask=None,
                attention_mask=None, position_ids=None, past_key_values=None, inputs_embeds=None, use_cache=None,
                return_dict=None, **kwargs):
        hidden, mimo_hidden, cache = self.model(
            input_ids=input_ids, text_input_ids=text_input_ids, whisper_input_feature=whisper_input_feature,
            is_continuous_mask=is_continuous_mask, attention_mask=attention_mask, position_ids=position_ids,
            past_key_values=past_key_values, inputs_embeds=inputs_embeds, use_cache=use_cache)
        text_logits = self.lm_head(hidden)
        audio_logits = self.mimo_output(mimo_hidden)
        if return_dict is False:
            return audio_logits, text_logits, cache
        return KimiaCausalLMOutput(logits=(audio_logits, text_logits), past_key_values=cache)
