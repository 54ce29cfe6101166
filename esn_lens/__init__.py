"""esn_lens: find and causally validate emotion-sensitive neurons (ESNs) in audio-language models.

Quick tour::

    from esn_lens import Lens, find_neurons, deactivate
    lens = Lens(model, processor)                       # any supported LALM (adapter chosen automatically)
    stats = lens.collect_stats(clips, prompt, emotions) # streaming per-emotion neuron statistics
    neurons = find_neurons(stats, "conact", top_frac=0.005)
    with lens.trace(batch):                             # nnsight's trace, TransformerLens names
        deactivate(neurons["angry"], positions="audio").apply(lens)
        h = lens.blocks[3].hook_resid_post.output.save()
        logits = lens.logits.save()
    out = lens.run(batch, edits=[deactivate(neurons["angry"])])   # the one-call form
"""
from .attribution import AttributionStats, collect_attribution, option_margin, patch_activations
from .adapters import ADAPTERS, Adapter, PositionMasks, adapter_for, hook_name, parse_hook_name, register_adapter
from .errors import CorruptFileError, ESNLensError, IncompatibleError, InputError, UnsupportedModelError
from .evaluate import (SEREvaluator, SERResult, accuracy_change_heatmap, bootstrap_ci, deactivation_conditions,
                       identification_pool, specificity, steering_conditions, target_shift)
from . import metrics
from .interventions import (INTERVENTIONS, AddTo, Condition, Edit, FunctionEdit, Gain, SetTo, add, deactivate,
                            make_edit, mean_ablate, steer)
from .lens import Batch, Lens, ProbeRecord, TraceOutput
from .sites import Site
from .neurons import NeuronSet
from .prompts import SERPrompt, build_prompt, parse_answer
from .registry import Registry
from .selectors import SELECTORS, find_neurons, score, select
from .stats import NeuronStats
from .topk import TopActivations

__version__ = "0.1.0"

__all__ = [
    "AttributionStats", "collect_attribution", "option_margin", "patch_activations", "ProbeRecord", "Site",
    "ADAPTERS", "Adapter", "PositionMasks", "adapter_for", "hook_name", "parse_hook_name", "register_adapter",
    "CorruptFileError", "ESNLensError", "IncompatibleError", "InputError", "UnsupportedModelError",
    "SEREvaluator", "SERResult", "accuracy_change_heatmap", "bootstrap_ci", "deactivation_conditions",
    "identification_pool", "specificity", "steering_conditions", "target_shift",
    "INTERVENTIONS", "AddTo", "Condition", "Edit", "FunctionEdit", "Gain", "SetTo", "add", "deactivate", "make_edit",
    "mean_ablate", "steer", "Batch", "Lens", "TraceOutput", "NeuronSet", "SERPrompt", "build_prompt", "parse_answer",
    "Registry", "metrics", "SELECTORS", "find_neurons", "score", "select", "NeuronStats", "TopActivations",
]
