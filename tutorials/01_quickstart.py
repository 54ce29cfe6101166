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
# # Quickstart: find emotion-sensitive neurons and switch them off
#
# The whole method in six steps, on the shipped demo model (a tiny audio-language model trained on
# synthetic emotional speech; it answers with the emotion word):
#
# 1. wrap the model in a `Lens`,
# 2. keep the clips the un-edited model answers correctly (the *identification pool*),
# 3. stream per-emotion neuron statistics over them,
# 4. select neurons with a selector (ConAct) and with the random baseline,
# 5. deactivate each emotion's neurons on held-out speakers and measure the accuracy change,
# 6. draw the heatmap.
#
# ### Glossary (the full table with formulas: README "Glossary", docs/api.md)
#
# - **unit**: one MLP neuron (layer, index). **"act" site** (`hook_act`): the MLP activation function's output,
#   `act_fn(gate_proj(x))` in a SwiGLU MLP, `act(fc1(x))` in a plain one; a unit *fires* on a token when it is > 0.
# - **K, T, P**: `K_e(n)` tokens of emotion-e clips on which unit n fired, out of `T_e` counted tokens;
#   firing rate `P_e(n) = K_e(n) / T_e`.
# - **identification pool**: the identification clips the *un-edited* model answers correctly, the same number
#   per emotion; statistics are collected over these only.
# - **selectors**: LAP `P_e(n)`; LAPE `-entropy` of `P_.(n)` normalised over emotions, for its top emotion;
#   MAD `abs(P_e(n) - mean_e' P_e'(n))`; ConAct `P_(1)(n) - P_(2)(n)` (top minus runner-up rate) for its top
#   emotion; random: seeded random scores.
# - **r / `top_frac`**: the budget, the top fraction of all layer x neuron units each emotion gets (2 % = 20 of
#   4 x 256 here).
# - **H, SE, ACE, ESS**: `H[m, e]` = accuracy change (points) on emotion e with emotion m's units off;
#   SE(e) = `H[e, e]`; ACE(e) = mean over m != e of `H[m, e]`; ESS = SE - ACE (large and negative = specific).
#
# **What to expect** (demo model, 24 clips a class, the default): a pool of 76 of 96 clips, ConAct ESS about
# -44 points and random ESS about +2; the script asserts it. The README's figures (ESS -46.1) use all 36
# unseen clips a class (`esn-lens demo`); this tutorial takes the first 24 of each to stay fast, so its numbers
# differ a little. Set `ESN_LENS_TUTORIAL_CLIPS=36` to reproduce the README's evaluation set.
#
# If the demo model is not installed, the tutorial falls back to a tiny model whose emotion decision sits
# in known ("planted") MLP units, so the same steps still show a result.
#
# Run it with `python tutorials/01_quickstart.py`, or open it as a notebook (`jupytext --to notebook`).
# The one-command version of all this is `esn-lens demo`.

# %%
import os
from pathlib import Path

import torch

from esn_lens.evaluate import (SEREvaluator, accuracy_change_heatmap, deactivation_conditions, identification_pool,
                               specificity)
from esn_lens.interventions import Condition
from esn_lens.lens import Lens
from esn_lens.selectors import find_neurons

torch.set_num_threads(int(os.environ.get("ESN_LENS_THREADS", "1")))
OUT = Path(os.environ.get("ESN_LENS_TUTORIAL_OUT", "tutorial_outputs"))
OUT.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## 1. Wrap the model
# `Lens(model, processor)` picks the adapter for the model family (here Qwen2-Audio) and never modifies
# the model. Every MLP neuron site has a TransformerLens-style name, e.g. `blocks.0.mlp.hook_act`
# (the output of the SwiGLU gate branch, the paper's site).

# %%
try:
    from esn_lens.demo_model import DEMO_EMOTIONS, DEMO_TOP_FRAC, demo_clips, load_demo_model

    model, processor = load_demo_model()
    identification, held_out = demo_clips("identification"), demo_clips("unseen")
    EMOTIONS, ANSWER, TOP_FRAC, DEMO = DEMO_EMOTIONS, None, DEMO_TOP_FRAC, True  # None: the model's recorded format
    print("model: the shipped demo model")
except Exception as e:  # the demo's assets are not installed: a tiny model with planted emotion units
    from esn_lens.testing.planted import build_planted, planted_clips

    EMOTIONS, ANSWER, DEMO = ("angry", "happy", "neutral", "sad"), "word", False
    model, processor, planted = build_planted(EMOTIONS)
    identification, held_out = planted_clips(6, EMOTIONS, seed=0, prefix="id"), planted_clips(6, EMOTIONS, seed=1)
    TOP_FRAC = 4 / 128  # 4 of the 2 x 64 units per emotion
    print(f"model: planted tiny model (demo not available: {e})")

lens = Lens(model, processor)
print(lens)
print(lens.hook_names("act")[:2])


# %% [markdown]
# ## 2. The identification pool
# The SER prompt is a single-choice question with the emotions as numbered options in a per-clip random
# order. `mode="constrained"` reads the answer from the options' logits in one forward pass
# (`mode="generate"` is the paper's greedy decoding with parsed answers).
#
# **The answer format.** The prompt's last line says "Answer with the option number" (the paper's wording,
# and the exact prompt the demo model was trained with), but the demo model learned to answer with the
# emotion *word*. Its record (`esn_lens.json` next to its weights) says so, and `SEREvaluator` takes
# `answer="word"` from it; `ev.scoring` prints what is scored. Reading its answers as digits
# (`answer="digit"`) gives about chance (25 %), and the evaluator then warns with that likely cause.

# %%
def per_emotion(clips, n):
    """At most n clips of every emotion (keeps the tutorial fast)."""
    return [c for e in EMOTIONS for c in [c for c in clips if c.emotion == e][:n]]


N = int(os.environ.get("ESN_LENS_TUTORIAL_CLIPS", "24"))  # clips per emotion and split (fewer = faster)
identification, held_out = per_emotion(identification, N), per_emotion(held_out, N)
ev = SEREvaluator(lens, EMOTIONS, mode="constrained", answer=ANSWER, batch_size=16)
print(ev.scoring)
pool = identification_pool(ev, identification)
print(f"pool: {len(pool)} of {len(identification)} identification clips answered correctly (balanced)")
assert len(pool) >= len(identification) // 2 and len(pool) % len(EMOTIONS) == 0

# %% [markdown]
# ## 3. Per-emotion neuron statistics
# One traced forward per batch accumulates, for every emotion, layer and neuron, how many token positions
# fire (value > 0): `K_e(n)`, out of `T_e` counted tokens. Nothing is stored per token.

# %%
# site "act", positions "valid" (no padding / special tokens); each clip read with its own SER prompt
stats = lens.collect_stats(pool, [ev.prompt(c).text for c in pool], EMOTIONS, batch_size=16, progress=False)
print(stats)
print("firing rate P_e(n):", tuple(stats.firing_rate.shape), "(emotion, layer, neuron)")

# %% [markdown]
# ## 4. Select neurons
# ConAct scores each neuron by how much more often it fires for its top emotion than for the runner-up;
# every emotion gets the same budget: the top `r` of all layer x neuron units. Random units of the same
# budget are the baseline.

# %%
conact = find_neurons(stats, "conact", top_frac=TOP_FRAC)
random_set = find_neurons(stats, "random", top_frac=TOP_FRAC, seed=0)
print("ConAct units per emotion:", conact.counts)
print("ConAct units per layer:", conact.layer_counts().sum(0).tolist())

# %% [markdown]
# ## 5. Deactivate and measure
# Each condition zeroes one emotion's units (at every position). All conditions of a batch run as rows of
# one traced forward, and the audio encoder runs once per batch. SE = accuracy change on that emotion,
# ACE = mean change on the others, ESS = SE - ACE (negative and large = specific).

# %%
heatmaps = {}
for name, ns in (("ConAct", conact), ("random", random_set)):
    results = ev.run(held_out, [Condition.baseline(), *deactivation_conditions(ns)])
    heatmaps[name] = accuracy_change_heatmap(results, EMOTIONS)
    sp = specificity(heatmaps[name])
    print(f"{name} mean SE {100 * sp['se_mean']:+.1f}  ACE {100 * sp['ace_mean']:+.1f}  ESS {100 * sp['ess_mean']:+.1f} points")
print(f"baseline accuracy {100 * results['baseline'].accuracy:.1f}% on {len(held_out)} held-out clips")
ess = {name: specificity(H)["ess_mean"] for name, H in heatmaps.items()}
assert results["baseline"].accuracy > 0.75  # chance is 25 %
assert ess["ConAct"] < -0.2 and abs(ess["random"]) < 0.1  # ConAct's units are specific, random's are not
if DEMO and N == 24:  # the default run: the figures stated at the top
    assert len(pool) == 76 and abs(100 * ess["ConAct"] + 43.8) < 1.5 and abs(100 * ess["random"] - 2.1) < 1.5

# %% [markdown]
# ## 6. The heatmap
# Rows: whose neurons are switched off; columns: the evaluated emotion. A clean diagonal is the paper's
# signature of emotion-specific neurons.

# %%
from esn_lens import figures  # noqa: E402

fig = figures.heatmaps(heatmaps, EMOTIONS)
path = figures.save(fig, OUT / "01_quickstart_heatmap.png")
print("heatmap:", path)
