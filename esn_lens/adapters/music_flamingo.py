"""Music Flamingo (``MusicFlamingoForConditionalGeneration``): decoder at ``model.language_model.layers``.

Audio Flamingo 3's layout with rotary time embeddings on the audio side (``model.pos_emb``); its processor wraps
each clip's ``<sound>`` tokens in ``<|sound_bos|>`` ... ``<|sound_eos|>`` (special positions).
"""
from __future__ import annotations

from .base import Adapter, register_adapter


@register_adapter("music_flamingo")
class MusicFlamingoAdapter(Adapter):
    """Music Flamingo. Audio placeholder ``<sound>`` (25 per second), between sound begin/end tokens; left padding."""

    layers_path = "model.language_model.layers"
    audio_token = "<sound>"
    audio_tower_path = "model.audio_tower"
    embeds_reuse_path = "model.language_model"
    class_names = ("MusicFlamingoForConditionalGeneration",)
    model_types = ("musicflamingo",)
    #: a row of docs/models.md (esn_lens.adapters.support)
    support = dict(
        title="Music Flamingo",
        mlp="Qwen2MLP: pre = gate_proj out, act = SiLU(gate) (the paper's), post = act * up_proj (down_proj input)",
        audio="`<sound>` ids (25 per second) between `<|sound_bos|>` and `<|sound_eos|>` (special)",
        inputs="its processor + chat template (left padding)",
        tested="tiny real model: sites, residuals, logits, deactivation and steering (forward and greedy generation) "
               "vs plain hooks; positions; `esn-lens run` on a saved folder; TransformerBridge path equals the HF path",
        limits="the audio encoder's output is reused across conditions (its rotary time embedding is inside the tower)",
    )
