"""Gemma 3n (``Gemma3nForConditionalGeneration``): a USM conformer audio encoder (``model.audio_tower``) and a
Gemma 3n decoder at ``model.language_model.layers`` with AltUp, LAuReL, per-layer inputs and activation sparsity.

What each named site is here:

- MLP (``Gemma3nTextMLP``): ``down_proj(act_fn(sparsify(gate_proj(x))) * up_proj(x))``. ``hook_pre`` = ``gate_proj``'s
  output (before any sparsification); ``hook_act`` = ``act_fn``'s output (GELU-tanh); ``hook_post`` = ``down_proj``'s
  input (``act * up``). In the layers whose ``activation_sparsity_pattern`` entry s is > 0 (the first 10 of the
  release, s = 0.95), ``sparsify`` is the Gaussian top-k ``relu(gate - (mean + std * Phi^-1(s)))`` over each
  position's neurons, so there ``hook_act = gelu_tanh(relu(gate - cutoff))``: exactly 0 where the gate is at or below
  the cutoff (about 95% of neurons), positive elsewhere; a neuron "fires" (> 0) exactly when its gate passes the
  cutoff. Dense layers: ``hook_act = gelu_tanh(gate)`` (slightly negative below 0). Editing ``hook_pre`` moves the
  cutoff too (it is computed from the edited gate).
- Residual: AltUp carries ``altup_num_inputs`` streams stacked as ``[streams, batch, pos, hidden]`` between layers.
  ``hook_resid_pre`` / ``hook_resid_post`` are the active stream (``altup_active_idx``, the one the layer's attention
  and MLP read and the final norm reads first) of the layer's input / output (side ``"input[k]"`` / ``"output[k]"``),
  so ``resid_post`` of layer l is ``resid_pre`` of layer l + 1; an edit there changes only that stream.
- ``hook_attn_out`` = ``self_attn``'s output (before ``post_attention_layernorm``), ``hook_mlp_out`` = the MLP's output
  (before ``post_feedforward_layernorm``). ``hook_embed`` = the text embedding table's output (audio positions are then
  replaced by ``embed_audio``'s projection of the audio encoder's output).
- ``logits`` = the model's returned logits, after the final logit soft-capping (``30 * tanh(lm_head / 30)``), i.e. the
  ``logits`` field of the root's output, not ``lm_head``'s raw output.

Audio: the processor writes each clip as ``\\n\\n<start_of_audio>`` + ``audio_seq_length`` (188) ``<audio_soft_token>``
+ ``<end_of_audio>\\n\\n`` whatever its length (the encoder gives 6.25 tokens per second; the rest of the 188 carry
one padding embedding). The vision tower (timm MobileNetV5) is not built without timm: see
:mod:`esn_lens.adapters.gemma3n_vision`.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from torch import Tensor

from ..errors import UnsupportedModelError
from .base import Adapter, SiteRow, register_adapter
from .gemma3n_vision import timm_available, without_vision_tower


@register_adapter("gemma3n")
class Gemma3nAdapter(Adapter):
    """Gemma 3n. Audio placeholder ``<audio_soft_token>`` (188 per clip) between ``<start_of_audio>`` and
    ``<end_of_audio>``; user turn ``<start_of_turn>user`` ... ``<end_of_turn>``; left padding."""

    layers_path = "model.language_model.layers"
    returned_logits = True  # the logits site is the returned, soft-capped logits
    audio_token = "<audio_soft_token>"
    audio_tower_path = "model.audio_tower"
    class_names = ("Gemma3nForConditionalGeneration",)
    model_types = ("gemma3n",)
    turn_start = "<start_of_turn>"
    turn_end = "<end_of_turn>"
    max_audio_seconds = 30.0
    #: a row of docs/models.md (esn_lens.adapters.support)
    support = dict(
        title="Gemma 3n",
        mlp="Gemma3nTextMLP: pre = gate_proj out (before sparsification), act = act_fn out = GELU-tanh(gate), and in "
            "layers with activation sparsity s > 0 (the release's first 10, s = 0.95) GELU-tanh(relu(gate - (mean + "
            "std * Phi^-1(s)))) over the position's neurons: 0 where the Gaussian top-k cut the gate, > 0 where it "
            "passed; post = act * up_proj (down_proj input); resid_pre/post = the active AltUp stream "
            "(`altup_active_idx`) of the stacked [streams, batch, pos, hidden] layer input/output; logits = the "
            "returned logits (after the final soft-capping)",
        audio="`<audio_soft_token>` ids between `<start_of_audio>` and `<end_of_audio>` (special): 188 per clip "
              "whatever its length (6.25 per second carry the encoder's output, the rest one padding embedding)",
        inputs="its processor (PIL image processor, no torchvision) + chat template (left padding; the template writes "
               "`<bos>`); without timm the vision tower is swapped for esn_lens's registered no-vision stand-in",
        tested="tiny real model (AltUp 2 streams, LAuReL, per-layer inputs, sparsity 0.95 in layer 0): sites, "
               "residuals, logits, deactivation and steering (forward and greedy generation) vs plain hooks; hook_act "
               "= 0 exactly where the Gaussian top-k cut the gate; stats; positions; loading with the vision "
               "tower's weights present but not loaded; `esn-lens run` on a saved folder",
        limits="no images (the timm vision tower is not loaded without timm; its weights are skipped); a 1 s clip "
               "still gives 188 audio positions; conditions reuse the audio encoder's output, not the decoder's "
               "input embeddings (its per-layer inputs come from the token ids); `--units encoder` is not available "
               "(a conformer, not a Whisper-style encoder)",
    )

    def __init__(self, model, processor: Any = None):
        super().__init__(model, processor)
        text = self.config.get_text_config()
        sizes = sorted(set(getattr(text, "intermediate_size", None) or [self.d_mlp]))
        if len(sizes) > 1:
            raise UnsupportedModelError(f"{type(model).__name__}: MLP widths differ across layers ({sizes}); esn_lens "
                                        "units are (layer, neuron) over one width")
        #: the AltUp stream the residual sites name (``text_config.altup_active_idx``)
        self.active_stream = int(getattr(text, "altup_active_idx", 0))

    def layer_site_rows(self, layer: int) -> list[SiteRow]:
        """The base rows, with the residual sites on the active AltUp stream of the stacked layer input/output."""
        rows = super().layer_site_rows(layer)
        k = self.active_stream
        side = {f"blocks.{layer}.hook_resid_pre": f"input[{k}]", f"blocks.{layer}.hook_resid_post": f"output[{k}]"}
        return [SiteRow(r.name, r.path, side.get(r.name, r.side)) for r in rows]

    def build_inputs(self, audios: Sequence[np.ndarray] | None, prompts: Sequence[str], *,
                     padding_side: str = "left", system: str | None = None) -> dict[str, Tensor]:
        """Token ids, attention mask and (with audio) ``input_features`` / ``input_features_mask`` from the processor;
        the chat template writes ``<bos>``, so the tokenizer adds no special tokens."""
        texts = [self.render_prompt(p, with_audio=audios is not None, system=system) for p in prompts]
        text_kwargs = {"padding": True, "padding_side": padding_side, "add_special_tokens": False}
        if audios is None:
            return dict(self.tokenizer(texts, return_tensors="pt", **text_kwargs))
        enc = self.processor(text=texts, audio=list(audios), sampling_rate=self.sampling_rate, return_tensors="pt",
                             text_kwargs=text_kwargs)
        enc.pop("token_type_ids", None)
        return dict(enc)

    @classmethod
    def prepare_config(cls, config: Any) -> Any:
        """Without timm, the config with its vision tower swapped for the no-vision stand-in (the checkpoint's vision
        tower weights are then skipped); with timm, unchanged."""
        return config if timm_available() else without_vision_tower(config)
