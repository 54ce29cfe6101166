"""Qwen2-Audio (``Qwen2AudioForConditionalGeneration``): decoder at ``model.language_model.layers``."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

from .base import Adapter, register_adapter


@register_adapter("qwen2_audio")
class Qwen2AudioAdapter(Adapter):
    """Qwen2-Audio-7B(-Instruct). Audio placeholder ``<|AUDIO|>``, 25 tokens per second; features are 3000 frames."""

    layers_path = "model.language_model.layers"
    audio_token = "<|AUDIO|>"
    audio_tower_path = "model.audio_tower"
    projector_path = "model.multi_modal_projector"
    embeds_reuse_path = "model.language_model"
    max_audio_seconds = 30.0  # Whisper features are exactly 3000 frames
    audio_token_samples = 640  # 40 ms at 16 kHz: 10 ms mel frames, stride-2 conv, pooling 2
    class_names = ("Qwen2AudioForConditionalGeneration",)
    model_types = ("qwen2_audio",)
    #: a row of docs/models.md (esn_lens.adapters.support)
    support = dict(
        title='Qwen2-Audio',
        mlp="Qwen2MLP: pre = gate_proj out, act = SiLU(gate) (the paper's), post = act * up_proj (down_proj input)",
        audio='`<|AUDIO|>` ids (25 per second)',
        inputs='its processor + chat template (features padded to 3000 frames)',
        tested='tiny real model: sites, stats, edits, generation vs plain hooks; batched = alone; `esn-lens run` on a saved folder',
        limits='30 s audio window (longer clips cut with a warning)',
    )

    def encode_cut_features(self, feats: Float[Tensor, "batch mel frames"], n_frames: Int[Tensor, " batch"]
                            ) -> tuple[Float[Tensor, "batch tokens d_audio"], Int[Tensor, " batch"]]:
        """The audio tower on features cut to the longest clip (not padded to 3000 frames), for training.

        At each clip's valid tokens it equals the tower's forward on the processor's full window (the tower
        masks padding frames and its positions are absolute). Returns the tower output (before the projector)
        and each clip's number of audio tokens. Example: ``enc, n = adapter.encode_cut_features(f[..., :200], lens)``.
        """
        from transformers.masking_utils import create_bidirectional_mask

        tower = self.model.get_submodule(self.audio_tower_path)
        x = F.gelu(tower.conv1(feats))
        x = F.gelu(tower.conv2(x)).permute(0, 2, 1)
        T = x.shape[1]
        x = x + tower.embed_positions.weight[:T]
        feat_len, out_len = tower._get_feat_extract_output_lengths(n_frames)
        valid = (torch.arange(T, device=x.device)[None, :] < feat_len[:, None]).long()
        attn = create_bidirectional_mask(config=tower.config, inputs_embeds=x, attention_mask=valid)
        for layer in tower.layers:
            x = layer(x, attn)
            if isinstance(x, tuple):
                x = x[0]
        x = tower.avg_pooler(x.permute(0, 2, 1)).permute(0, 2, 1)
        return tower.layer_norm(x), out_len

    def last_logits_from_audio(self, input_ids: Int[Tensor, "batch pos"], attention_mask: Int[Tensor, "batch pos"],
                               audio: Float[Tensor, "batch tokens d_audio"], n_tokens: Int[Tensor, " batch"]
                               ) -> Float[Tensor, "batch vocab"]:
        """Last-position logits given the tower's output: projector, audio embeddings scattered into the
        ``<|AUDIO|>`` positions, decoder, head (left-padded rows). Pairs with :meth:`encode_cut_features`."""
        lm = self.model.get_submodule(self.embeds_reuse_path)
        emb = lm.get_input_embeddings()(input_ids)
        aud = self.model.get_submodule(self.projector_path)(audio)
        keep: Bool[Tensor, "batch tokens"] = torch.arange(aud.shape[1], device=aud.device)[None, :] < n_tokens[:, None]
        slots = (input_ids == self.model.config.audio_token_id).unsqueeze(-1)
        emb = emb.masked_scatter(slots, aud[keep].to(emb.dtype))
        h = lm(inputs_embeds=emb, attention_mask=attention_mask).last_hidden_state
        return self.model.get_submodule(self.lm_head_path)(h[:, -1])
