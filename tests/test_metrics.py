"""esn_lens.metrics on constructed prediction tables, against hand-computed values; structured conditions."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from esn_lens import metrics
from esn_lens.errors import InputError
from esn_lens.evaluate import (SERResult, accuracy_change_heatmap, bootstrap_ci, deactivation_conditions, find_result,
                               specificity, steering_conditions, target_shift)
from esn_lens.interventions import Condition, find_condition
from esn_lens.neurons import NeuronSet

E = ("angry", "sad")
LABELS = ["angry", "angry", "sad", "sad"]
BASE = ["angry", "angry", "sad", "sad"]          # all correct
MASK_ANGRY = ["sad", "angry", "sad", "sad"]      # correct 0 1 1 1
MASK_SAD = ["sad", "angry", None, "sad"]         # correct 0 1 0 1 (one unparsed)


def test_correct_per_class_and_share():
    assert metrics.correct(MASK_SAD, LABELS).tolist() == [0.0, 1.0, 0.0, 1.0]
    assert metrics.per_class(metrics.correct(MASK_SAD, LABELS), LABELS, E + ("happy",))["angry"] == 0.5
    assert np.isnan(metrics.per_class(metrics.correct(MASK_SAD, LABELS), LABELS, E + ("happy",))["happy"])
    assert metrics.share(MASK_SAD, "sad") == 0.5 and metrics.share(MASK_ANGRY, "sad") == 0.75
    assert metrics.target_shift(BASE, [["sad"] * 4, MASK_ANGRY], "sad") == [0.5, 0.25]
    with pytest.raises(InputError, match="3 predictions for 4 labels"):
        metrics.correct(BASE[:3], LABELS)


def test_heatmap_se_ace_ess_by_hand():
    rows = [metrics.correct(p, LABELS) for p in (MASK_ANGRY, MASK_SAD)]
    H, reps = metrics.accuracy_change(rows, metrics.correct(BASE, LABELS), LABELS, E)
    assert reps is None
    assert H.tolist() == [[-0.5, 0.0], [-0.5, -0.5]]
    sp = metrics.specificity(H)
    # SE = diagonal; ACE(e) = mean of the other masks' effect on e; ESS = SE - ACE
    assert sp["se"].tolist() == [-0.5, -0.5] and sp["ace"].tolist() == [-0.5, 0.0] and sp["ess"].tolist() == [0.0, -0.5]
    assert (sp["se_mean"], sp["ace_mean"], sp["ess_mean"]) == (-0.5, -0.25, -0.25)
    se, ace, ess = metrics.se_ace_ess(np.array([[-3.0, 1, 0], [0, -2, 2], [1, 1, -1]]))
    assert se.tolist() == [-3, -2, -1] and ace.tolist() == [0.5, 1.0, 1.0] and ess.tolist() == [-3.5, -3.0, -2.0]
    with pytest.raises(InputError, match="square"):
        metrics.specificity(np.zeros((2, 3)))


def test_stratified_bootstrap_and_replicates_by_hand():
    labels = np.array(["angry", "sad", "angry", "sad", "sad"])
    boot = metrics.stratified_bootstrap(labels, E, 50, seed=1)
    assert boot.shape == (50, 5)
    assert set(np.unique(boot[:, :2])) <= {0, 2} and set(np.unique(boot[:, 2:])) <= {1, 3, 4}  # within each emotion
    assert (labels[boot] == "angry").sum(1).tolist() == [2] * 50
    np.testing.assert_array_equal(boot, metrics.stratified_bootstrap(labels, E, 50, seed=1))  # seeded
    # a hand-made replicate: clips 0, 0 (angry) and 2, 2 (sad)
    rows = [metrics.correct(MASK_ANGRY, LABELS)]
    H, reps = metrics.accuracy_change(rows, metrics.correct(BASE, LABELS), LABELS, E, np.array([[0, 0, 2, 2],
                                                                                                  [0, 1, 2, 3]]))
    assert reps[0].tolist() == [[-1.0, 0.0]] and reps[1].tolist() == H.tolist() == [[-0.5, 0.0]]
    assert metrics.ci(np.arange(101)) == (2.5, 97.5)
    assert metrics.ci(np.arange(101), level=0.5) == (25.0, 75.0)
    assert metrics.paired_bootstrap_ci(np.ones(6), np.ones(6)) == (0.0, 0.0)
    assert bootstrap_ci(np.array([0, 1] * 5), np.ones(10), seed=3) == metrics.paired_bootstrap_ci(
        np.array([0, 1] * 5), np.ones(10), seed=3)


def _results(conds, preds):
    return {c.name: SERResult(c.name, E, LABELS, p, spec=c) for c, p in zip(conds, preds)}


def test_old_entry_points_call_metrics_and_find_conditions_by_fields():
    masks = torch.zeros(2, 1, 4, dtype=torch.bool)
    masks[0, 0, 0] = masks[1, 0, 1] = True
    ns = NeuronSet(masks, E, selector="mad", top_frac=0.25)
    conds = [Condition.baseline(), *deactivation_conditions(ns, name="mad")]
    assert [c.name for c in conds] == ["baseline", "mad|mask:angry", "mad|mask:sad"]
    assert [(c.kind, c.emotion, c.neurons) for c in conds[1:]] == [("deactivate", "angry", "mad"),
                                                                   ("deactivate", "sad", "mad")]
    res = _results(conds, [BASE, MASK_ANGRY, MASK_SAD])
    H = accuracy_change_heatmap(res, E, name="mad")
    assert H.tolist() == [[-0.5, 0.0], [-0.5, -0.5]]
    assert accuracy_change_heatmap(res, E, prefix="mad|").tolist() == H.tolist()  # the older spelling
    assert specificity(H)["ess_mean"] == -0.25
    # display names are derived; lookups use the fields (a renamed condition is still found)
    renamed = [Condition("plain", [], kind="baseline"),
               Condition("first", conds[1].edits, kind="deactivate", emotion="angry", neurons="mad"),
               Condition("second", conds[2].edits, kind="deactivate", emotion="sad", neurons="mad")]
    assert accuracy_change_heatmap(_results(renamed, [BASE, MASK_ANGRY, MASK_SAD]), E, name="mad").tolist() == H.tolist()
    steer = steering_conditions(ns, [1, 2.5], name="mad")
    assert [c.name for c in steer] == ["mad|steer:angry:1", "mad|steer:angry:2.5", "mad|steer:sad:1", "mad|steer:sad:2.5"]
    sres = _results([Condition.baseline(), *steer], [BASE, BASE, ["angry"] * 4, BASE, ["sad"] * 4])
    assert target_shift(sres, "angry", [1, 2.5]) == [0.0, 0.5]
    assert find_result(sres, "steer", emotion="sad", alpha=2.5).predictions == ["sad"] * 4
    assert find_condition(steer, "steer", emotion="sad", alpha=1).name == "mad|steer:sad:1"
    with pytest.raises(InputError, match="2 condition"):
        find_condition(steer, "steer", emotion="sad")


def test_condition_structure_and_user_conditions():
    assert Condition("baseline").kind == "baseline" and Condition.baseline().name == "baseline"
    user = Condition("mask:angry", [])
    assert user.kind == "user" and user.name == "mask:angry"
    assert Condition.deactivate("angry", []).name == "mask:angry"
    assert Condition.steer("sad", 0.5, [], neurons="x").name == "x|steer:sad:0.5"
    # a user's condition named like the library's is still found by that name (README's hand-built form)
    res = {c.name: SERResult(c.name, E, LABELS, p, spec=c) for c, p in
           zip([Condition("baseline"), Condition("mask:angry"), Condition("mask:sad")], [BASE, MASK_ANGRY, MASK_SAD])}
    assert accuracy_change_heatmap(res, E).tolist() == [[-0.5, 0.0], [-0.5, -0.5]]
    with pytest.raises(InputError, match="needs alpha"):
        Condition("", [], kind="steer", emotion="sad")
    with pytest.raises(InputError, match="kind must be"):
        Condition("x", [], kind="mask")
    with pytest.raises(InputError, match="needs a name"):
        Condition()
