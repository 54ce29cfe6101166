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
# # A selector of your own
#
# A selector is a function `fn(stats, *, seed=0, **options) -> scores` of shape (emotion, layer, neuron):
# higher = more specific to that emotion, `-inf` = never choose. Register it with `@SELECTORS.register`
# (the built-ins LAP, LAPE, MAD, ConAct and random register themselves the same way) and it works
# everywhere a selector name does: `find_neurons`, the pipeline, and `esn-lens run --plugin mymodule
# --selector <name>`.
#
# We use a tiny model whose emotion decision sits in known, planted MLP units, so we can check how many of
# them each selector recovers.

# %%
import os

import torch

from esn_lens.evaluate import SEREvaluator, accuracy_change_heatmap, deactivation_conditions, specificity
from esn_lens.interventions import Condition
from esn_lens.lens import Lens
from esn_lens.selectors import SELECTORS, find_neurons, score
from esn_lens.stats import NeuronStats
from esn_lens.testing.planted import build_planted, planted_clips

torch.set_num_threads(int(os.environ.get("ESN_LENS_THREADS", "1")))
EMOTIONS = ("angry", "happy", "neutral", "sad")
model, tokenizer, planted = build_planted(EMOTIONS)
lens = Lens(model, tokenizer)
clips = planted_clips(8, EMOTIONS, seed=0)
ev = SEREvaluator(lens, EMOTIONS, mode="constrained", answer="word", batch_size=16)

stats = lens.new_stats(EMOTIONS)
for start in range(0, len(clips), 16):
    chunk = clips[start:start + 16]
    batch = lens.batch_clips(chunk, [ev.prompt(c).text for c in chunk])
    lens.run(batch, stats=stats, emotion_index=stats.emotion_index([c.emotion for c in chunk]), logits="none")
print(stats)


# %% [markdown]
# ## Register a selector
# "Log firing ratio": how much more often a unit fires for emotion e than on average over emotions,
# with a smoothing constant. Whole-tensor operations only: it scores all (E, L, N) units at once.

# %%
@SELECTORS.register("log_ratio", overwrite=True)
def log_ratio(stats: NeuronStats, *, seed: int = 0, eps: float = 1e-3) -> torch.Tensor:
    """score_e(n) = log((P_e(n) + eps) / (mean_e' P_e'(n) + eps))."""
    P = stats.firing_rate
    return torch.log((P + eps) / (P.mean(0, keepdim=True) + eps))


print("registered selectors:", SELECTORS.names())
print("scores:", tuple(score(stats, "log_ratio", eps=1e-2).shape))

# %% [markdown]
# ## Use it like a built-in
# `find_neurons` takes the name (and the selector's own options). Compare what each selector recovers.

# %%
budget = 4 / 128  # 4 units per emotion of the 2 x 64
truth = {e: set(map(tuple, planted[e])) for e in EMOTIONS}
for name in ("log_ratio", "conact", "mad", "lap", "random"):
    ns = find_neurons(stats, name, top_frac=budget)
    found = sum(len(truth[e] & {tuple(x) for x in ns.indices(e).tolist()}) for e in EMOTIONS)
    print(f"{name:>10}: recovers {found} of {4 * len(EMOTIONS)} planted units")

# %% [markdown]
# ## And validate it causally
# Deactivate each emotion's selected units and compute the specificity (ESS = SE - ACE).

# %%
mine = find_neurons(stats, "log_ratio", top_frac=budget)
held_out = planted_clips(4, EMOTIONS, seed=1, prefix="h")
H = accuracy_change_heatmap(ev.run(held_out, [Condition.baseline(), *deactivation_conditions(mine)]), EMOTIONS)
print(f"log_ratio mean ESS {100 * specificity(H)['ess_mean']:+.1f} points")

# %% [markdown]
# In a run: `RunConfig(selectors=("log_ratio", "conact", "random"), ...)`, or on the command line put the
# function in a module and call `esn-lens run --plugin mymodule --selector log_ratio --selector random ...`.
