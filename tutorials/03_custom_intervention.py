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
# themselves in `INTERVENTIONS` exactly like yours. A *watcher* is a callback `on_value(layer, site, value)`
# that sees each recorded site's real tensor inside the traced forward, after the edits. (It is not
# `lens.probe`, which records a site's pooled value for a linear probe: tutorial 06.)
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

#
# **What to expect**: clamping at 4.0 changes nothing (SE +0.0), clamping at 2.0 or lower removes every
# emotion's accuracy (SE -100.0); clamping happy's units and steering sad's makes every clip "sad" (share 1.0).
# Why 4.0 does nothing is shown by the watcher below.

# %%
se = {}
for limit in (4.0, 2.0, 1.0, 0.0):
    res = ev.run(clips, [Condition.baseline(), *deactivation_conditions(units, kind="clamp", limit=limit)])
    se[limit] = specificity(accuracy_change_heatmap(res, EMOTIONS))["se_mean"]
    print(f"clamp at {limit:.1f}: mean SE {100 * se[limit]:+.1f} points")
assert se == {4.0: 0.0, 2.0: -1.0, 1.0: -1.0, 0.0: -1.0}

conds = [Condition("baseline"), Condition("clamp happy, steer sad", [make_edit("clamp", units["happy"]),
                                                                     make_edit("steer", units["sad"], alpha=3.0)])]
res = ev.run(clips, conds)
print("share predicted sad:", {name: round(r.share("sad"), 3) for name, r in res.items()})
assert res["clamp happy, steer sad"].share("sad") == 1.0

# %% [markdown]
# ## Watching values with `on_value`
# Record the mean value of the angry units at the last position of angry clips, with and without the
# intervention, and, for comparison, the other emotions' units there. The watcher sees the value after the
# edits of the same trace: the clamped units read at most the limit.
#
# **Why a clamp at 4.0 does nothing**: the answer goes to the emotion whose planted units are largest at the
# last position. On an angry clip the angry units read about 6.3 and every other emotion's units about 2.6
# (they fire a little at every prompt's last line). Capping the angry units at 4.0 keeps them above 2.6, so
# "angry" still wins; at 2.0 they fall below the others and the answer changes. A deactivation is only as
# strong as the margin it removes.

# %%
angry = units["angry"]
seen = {}


def watch_angry_units(layer: int, site: str, value: torch.Tensor) -> None:
    """on_value callback: (batch, pos, neuron) values -> mean at the last position, angry vs the others' units."""
    sel, rest = angry[layer].to(value.device), (units.all_units() & ~angry)[layer].to(value.device)
    if sel.any():
        seen[layer] = (value[:, -1, sel].float().mean().item(), value[:, -1, rest].float().mean().item())


batch = lens.batch_clips([c for c in clips if c.emotion == "angry"], ev.prompt(clips[0]).text)
for edits in ([], [make_edit("clamp", angry, limit=0.1)]):
    seen.clear()
    lens.run(batch, record=lens.hook_names("act"), on_value=watch_angry_units, edits=edits)
    label = "clamped" if edits else "plain"
    (layer, (mine, others)), = seen.items()
    print(f"{label:>8}: layer {layer}, last position: angry units {mine:.2f}, other emotions' units {others:.2f}")
    if not edits:
        assert mine > 4.0 > others > 2.0  # why the clamp at 4.0 changes no answer and the one at 2.0 does
assert mine <= 0.1 + 1e-6
