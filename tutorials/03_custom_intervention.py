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
# # An intervention of your own, and a probe
#
# Interventions are registered factories that return an `Edit` of chosen (layer, neuron) units at one MLP
# site. The built-ins -- `deactivate` (gain 0), `steer` (gain 1 + alpha), `mean_ablate`, `add` -- register
# themselves in `INTERVENTIONS` exactly like yours. A *probe* is a function `on_value(layer, site, value)`
# that sees each recorded site's real tensor inside the traced forward, after the edits.
#
# We use the tiny planted model (emotion decided by known MLP units) so the effects are easy to read.

# %%
import os

import torch

from esn_lens.evaluate import SEREvaluator, accuracy_change_heatmap, deactivation_conditions, specificity
from esn_lens.interventions import INTERVENTIONS, Condition, FunctionEdit, make_edit
from esn_lens.lens import Lens
from esn_lens.neurons import NeuronSet
from esn_lens.testing.planted import build_planted, planted_clips

torch.set_num_threads(int(os.environ.get("ESN_LENS_THREADS", "1")))
EMOTIONS = ("angry", "happy", "neutral", "sad")
model, tokenizer, planted = build_planted(EMOTIONS)
lens = Lens(model, tokenizer)
units = NeuronSet.from_indices(EMOTIONS, planted, lens.n_layers, lens.d_mlp, selector="planted")
clips = planted_clips(4, EMOTIONS, seed=1)
ev = SEREvaluator(lens, EMOTIONS, mode="constrained", answer="word", batch_size=16)


# %% [markdown]
# ## Register an intervention
# `clamp`: cap the chosen units at `limit` (a soft deactivation). `FunctionEdit` takes
# `fn(value, layer, mask) -> new value`; only the chosen units (and rows) are taken from the result.

# %%
@INTERVENTIONS.register("clamp", overwrite=True)
def clamp(units, limit: float = 0.0, site: str = "act", rows=None) -> FunctionEdit:
    """Cap the units' values at ``limit``."""
    return FunctionEdit(units, site=site, rows=rows, fn=lambda value, layer, mask: value.clamp(max=limit))


print("interventions:", INTERVENTIONS.names())

# %% [markdown]
# ## Use it in conditions
# `deactivation_conditions(neurons, kind=...)` builds one condition per emotion with any
# registered intervention; `make_edit(name, units, **options)` builds a single edit.

# %%
for limit in (4.0, 2.0, 1.0, 0.0):
    res = ev.run(clips, [Condition.baseline(), *deactivation_conditions(units, kind="clamp", limit=limit)])
    H = accuracy_change_heatmap(res, EMOTIONS)
    print(f"clamp at {limit:.1f}: mean SE {100 * specificity(H)['se_mean']:+.1f} points")

conds = [Condition("baseline"), Condition("clamp happy, steer sad", [make_edit("clamp", units["happy"]),
                                                                     make_edit("steer", units["sad"], alpha=3.0)])]
res = ev.run(clips, conds)
print("share predicted sad:", {name: round(r.share("sad"), 3) for name, r in res.items()})

# %% [markdown]
# ## A probe with `on_value`
# Record the mean value of the angry units at the last position, with and without the intervention. The
# probe sees the value after the edits of the same trace: the clamped units read at most the limit.

# %%
angry = units["angry"]
seen = {}


def probe(layer: int, site: str, value: torch.Tensor) -> None:
    sel = angry[layer].to(value.device)
    if sel.any():
        seen[layer] = value[:, -1, sel].float().mean().item()  # (batch, pos, neuron) -> last position


batch = lens.batch_clips([c for c in clips if c.emotion == "angry"], ev.prompt(clips[0]).text)
for edits in ([], [make_edit("clamp", angry, limit=0.1)]):
    seen.clear()
    lens.run(batch, record=lens.hook_names("act"), on_value=probe, edits=edits)
    label = "clamped" if edits else "plain"
    print(f"{label:>8}: mean angry-unit value at the last position {seen}")
