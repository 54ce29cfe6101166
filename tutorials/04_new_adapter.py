# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Support a new model family: an adapter
#
# Adapters are the only place that knows a model's module paths and input format. esn_lens ships adapters
# for Qwen2-Audio, Qwen2.5-Omni, Audio Flamingo 3, Kimi-Audio and generic `model.layers` causal LMs, each
# registered with `@register_adapter` -- the same decorator you use here.
#
# Our "new family" is a tiny Llama-style model whose decoder layers live at `backbone.blocks` instead of
# `model.layers` (as in many research codebases). The adapter only has to say where the layers are and
# which models it claims; the base class handles the SwiGLU sites (`gate_proj` -> `act_fn` -> `down_proj`),
# position masks, the chat template and text inputs. For an audio model you would also override
# `build_inputs` and set `audio_token` / `audio_tower_path` (see `esn_lens/adapters/qwen2_audio.py`).
#
# The MLP's neuron sites are declared by the adapter too, in `mlp_sites` (site -> attribute of the layer's MLP,
# output or input side). The default is the gated table (`gate_proj` -> `act_fn` -> `down_proj`); a plain MLP
# (GPT-2 style `fc1` -> `act` -> `fc2`) sets `mlp_sites = PLAIN_MLP_SITES`, or its own names, e.g. GPT-2's
# `{"pre": ("c_fc", "output"), "act": ("act", "output"), "post": ("c_proj", "input")}`. Statistics, selectors
# and edits then work unchanged (checked exactly against plain hooks in `tests/test_plugin_package.py`). The
# other hooks a family may override -- `site_path`, `call_args`, `root`, `fingerprint` -- are listed in
# docs/api.md ("The adapter hooks").

# %%
import os

import torch
from torch import nn
from transformers.modeling_outputs import CausalLMOutputWithPast

from esn_lens.adapters import ADAPTERS, Adapter, register_adapter
from esn_lens.evaluate import SEREvaluator
from esn_lens.lens import Lens
from esn_lens.selectors import find_neurons
from esn_lens.testing import build_tiny
from esn_lens.testing.planted import planted_clips

torch.set_num_threads(int(os.environ.get("ESN_LENS_THREADS", "1")))


# %% [markdown]
# ## The model: a different module path
# A thin wrapper around a tiny random Llama: `backbone.blocks[i].mlp` are the (Llama) gated MLPs. The
# output head must be reachable as `lm_head` (where the Lens reads the logits).

# %%
class TinyChatLM(nn.Module):
    """A Llama-style decoder with its layers at ``backbone.blocks``."""

    def __init__(self, llama):
        super().__init__()
        self.config = llama.config
        self.backbone = nn.Module()
        self.backbone.embed = llama.model.embed_tokens
        self.backbone.blocks = llama.model.layers
        self.backbone.norm = llama.model.norm
        self.rotary = llama.model.rotary_emb
        self.lm_head = llama.lm_head

    def forward(self, input_ids, attention_mask=None, **kwargs):
        h = self.backbone.embed(input_ids)
        pos = torch.arange(input_ids.shape[1], device=input_ids.device)[None].expand_as(input_ids)
        rope = self.rotary(h, pos)
        T = input_ids.shape[1]
        causal = torch.ones(T, T, dtype=torch.bool, device=h.device).tril()
        mask = causal[None, None] if attention_mask is None else causal[None, None] & attention_mask.bool()[:, None, None, :]
        bias = torch.zeros(mask.shape, dtype=h.dtype, device=h.device).masked_fill(~mask, torch.finfo(h.dtype).min)
        for block in self.backbone.blocks:
            out = block(h, attention_mask=bias, position_ids=pos, position_embeddings=rope)
            h = out[0] if isinstance(out, tuple) else out
        return CausalLMOutputWithPast(logits=self.lm_head(self.backbone.norm(h)))


llama, tokenizer = build_tiny("llama", extra_words=["angry", "happy", "neutral", "sad"])
model = TinyChatLM(llama).eval()
print(type(model).__name__, "layers at backbone.blocks:", len(model.backbone.blocks))


# %% [markdown]
# ## The adapter
# `layers_path` is the dotted path from the wrapped model to the `ModuleList` of decoder layers;
# `class_names` (or `model_types`, matched against `config.model_type`) say which models it claims.

# %%
@register_adapter("tiny_chat")
class TinyChatAdapter(Adapter):
    """Llama-style decoders with layers at ``backbone.blocks`` (text only)."""

    layers_path = "backbone.blocks"
    embed_path = "backbone.embed"  # the token embedding (lens.embed); lm_head is found at the default path
    class_names = ("TinyChatLM",)


print("registered adapters:", ADAPTERS.names())
lens = Lens(model, tokenizer)  # picked by class name; Lens(model, tokenizer, adapter="tiny_chat") also works
print(lens)
print("sites:", lens.adapter.site_path(0, "act"), lens.adapter.site_path(0, "post"))

# %% [markdown]
# ## Everything else works unchanged
# Record sites by their TransformerLens-style names, collect statistics, select neurons, run SER.
#
# **What to expect**: the recorded `hook_act` equals a plain forward hook on `act_fn` exactly; MAD finds 6 units
# per emotion (5 % of 2 x 64); the SER accuracy of this *random-weight* model is near chance (0.25): it was
# never trained, so there is nothing to find -- the point is that every step runs on the new family.

# %%
clips = planted_clips(3, ("angry", "happy", "neutral", "sad"), seed=0)  # text clips (transcripts)
batch = lens.batch_clips(clips[:4], "Which emotion? Answer with one word.")
out = lens.run(batch, record=["blocks.0.mlp.hook_act", "blocks.1.mlp.hook_post"])
print({k: tuple(v.shape) for k, v in out.cache.items()})

# the same values as a plain forward hook on the module (the Lens never changes the model)
ref = {}
h = model.backbone.blocks[0].mlp.act_fn.register_forward_hook(lambda m, i, o: ref.setdefault("act", o.detach()))
with torch.no_grad():
    model(**batch.inputs)
h.remove()
print("matches a forward hook:", torch.allclose(ref["act"], out.cache["blocks.0.mlp.hook_act"], atol=1e-6))
assert torch.equal(ref["act"], out.cache["blocks.0.mlp.hook_act"])

stats = lens.collect_stats(clips, "Which emotion? Answer with one word.", ("angry", "happy", "neutral", "sad"),
                           progress=False)
ns = find_neurons(stats, "mad", top_frac=0.05)
print("MAD units per emotion:", ns.counts)
assert set(ns.counts.values()) == {6}
ev = SEREvaluator(lens, ("angry", "happy", "neutral", "sad"), mode="constrained", answer="word")
print(f"SER accuracy of this random model: {ev.run(clips)['baseline'].accuracy:.2f} (chance 0.25)")
