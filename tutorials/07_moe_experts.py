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
# # Expert neurons: emotion-sensitive experts and expert units of a mixture-of-experts LALM
#
# Qwen3-Omni's decoder is a mixture of experts: in every layer a router sends each token to its top-k experts,
# and there is no module per expert. esn_lens treats the (expert, neuron) pairs of a layer as its units,
# flattened `expert * d_expert + neuron`, so `lens.d_mlp == n_experts * d_expert` and every selector, edit,
# report and file works unchanged. A unit's statistics count only the tokens routed to its expert (per-unit T).
#
# We use the tiny real Qwen3-Omni thinker of `esn_lens.testing` with planted weights: in layer 0 the router
# sends each emotion's cue word to its own expert, where two units fire on exactly those tokens.

# %%
import torch

from esn_lens import Lens, deactivate, find_neurons
from esn_lens.moe_stats import RouterStats, expert_units, find_experts, route_site
from esn_lens.testing.tiny_moe import build_planted_moe, planted_moe_prompts

EMOTIONS = ("angry", "happy", "neutral", "sad")
model, processor, planted = build_planted_moe(EMOTIONS)
lens = Lens(model, processor)  # logs once: the MoE layers now run esn_lens's exact per-expert path
a = lens.adapter
print(f"{a.name}: {lens.n_layers} layers x {a.n_experts} experts x {a.d_expert} neurons, top-{a.top_k}; "
      f"d_mlp = {lens.d_mlp}")

# %% [markdown]
# ## Inside a trace: dense views of the expert units
#
# `lens.blocks[l].mlp.hook_act` is a dense (batch, pos, units) view; entries of experts a token is not routed
# to are exactly 0. `route_site(lens, l)` gives the routing weights (batch, pos, n_experts), 0 where not routed.

# %%
prompts, labels = [], []
for e in EMOTIONS:
    p = planted_moe_prompts(e, 2)
    prompts, labels = prompts + p, labels + [e] * len(p)
batch = lens.batch(None, prompts, labels=labels)
with lens.trace(batch):
    route = route_site(lens, 0).save()
    act = lens.blocks[0].mlp.hook_act.output.save()
print("hook_act", tuple(act.shape), "route", tuple(route.shape), "experts per token:",
      int((route[0, -1] > 0).sum()))

# %% [markdown]
# ## Routing-aware statistics and router statistics in one forward

# %%
stats = lens.new_stats(EMOTIONS)            # routed=True: T has shape (emotion, layer, unit)
router = RouterStats.for_lens(lens, EMOTIONS)
with lens.trace(batch):
    stats.record(lens)
    router.record(lens)
print("routed stats:", stats.routed, "T shape", tuple(stats.T.shape), "tokens", stats.tokens.tolist())

# %% [markdown]
# ## Emotion-sensitive experts (LAPE over routing frequencies) and expert units (any selector)

# %%
experts = find_experts(router, "lape", top_frac=1 / 12)  # one (layer, expert) per emotion
for i, e in enumerate(EMOTIONS):
    print(f"{e}: experts (layer, expert) {experts[i].nonzero().tolist()}")
units = find_neurons(stats, "lape", count=2)
hits = sum(len({tuple(u) for u in units.indices(e).tolist()} & set(planted[e])) for e in EMOTIONS)
print(f"LAPE recovers {hits} of {sum(len(v) for v in planted.values())} planted expert units")

# %% [markdown]
# ## Edits on expert units act only on the tokens routed to their expert
#
# Deactivating angry's whole expert (every unit of it) is a unit edit like any other.

# %%
angry_expert = expert_units(experts[0], a.d_expert)
base = lens.run(batch, logits="all").logits
edited = lens.run(batch, edits=[deactivate(angry_expert)], logits="all").logits
changed = (edited - base).abs().amax(-1) > 1e-6
print("positions changed by deactivating angry's expert, per prompt:", changed.sum(1).tolist())
