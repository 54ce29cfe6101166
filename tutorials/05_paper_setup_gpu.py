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
# # The paper's setup on a GPU: Qwen2.5-Omni-7B and Audio Flamingo 3 on IEMOCAP
#
# "Discovering and Causally Validating Emotion-Sensitive Neurons in Large Audio-Language Models" (Zhao,
# Schuller, Sisman; ACL 2026): 7B audio-language models in bfloat16, IEMOCAP with the 4-class protocol
# (neutral, happy + excited, sad, angry), speaker-disjoint identification / evaluation, 200 evaluation clips
# per emotion, greedy decoding of at most 20 tokens with parsed answers, neurons at the SwiGLU gate output,
# a budget of r = 0.5% of all 28 x 18944 units per emotion, selectors LAP, LAPE, MAD, ConAct and random.
#
# Needs: a CUDA GPU with about 20 GB free per model, the model weights (hub download or a local folder),
# and IEMOCAP on disk. Without them this script only checks its imports and configuration and exits 0
# (`python tutorials/05_paper_setup_gpu.py --check` forces that mode). Set `IEMOCAP_DIR`, and optionally
# `ESN_LENS_MODELS` (comma-separated hub ids or folders) and `ESN_LENS_RUNS` (output folder).
#
# The same run from the shell::
#
#     esn-lens run --model Qwen/Qwen2.5-Omni-7B --dtype bfloat16 --device-map auto \
#         --dataset iemocap --data-dir $IEMOCAP_DIR --label-set iemocap4 --top-frac 0.005 \
#         --mode generate --out runs/omni_iemocap

# %%
import os
import sys
from pathlib import Path

import torch

from esn_lens.adapters import ADAPTERS
from esn_lens.data.loaders import DATASETS
from esn_lens.pipeline import PAPER_SELECTORS, RunConfig, run_pipeline
from esn_lens.selectors import SELECTORS

MODELS = [m for m in os.environ.get("ESN_LENS_MODELS", "Qwen/Qwen2.5-Omni-7B,nvidia/audio-flamingo-3-hf").split(",") if m]
IEMOCAP = os.environ.get("IEMOCAP_DIR", "/data/IEMOCAP_full_release")
RUNS = Path(os.environ.get("ESN_LENS_RUNS", "runs"))


def paper_config(model: str) -> RunConfig:
    """The paper's protocol for one model (everything the run computes is in this object)."""
    return RunConfig(
        model=model, dataset="iemocap", data_dir=IEMOCAP, label_set="iemocap4",
        selectors=PAPER_SELECTORS, top_frac=0.005,            # r = 0.5% of all units, per emotion
        site="act", positions="valid",                          # act_fn(gate_proj(x)); no padding/special tokens
        mode="generate", max_new_tokens=20,                     # greedy decoding, parsed answers
        eval_fraction=0.5, eval_per_emotion=200, seed=0,        # speaker-disjoint, 200 test clips per emotion
        alphas=(0.5, 1.0, 2.0, 4.0), bootstrap=1000,
        dtype="bfloat16", device_map="auto", batch_size=8, checkpoint_every=4,
    )


# %% [markdown]
# ## Check mode: imports and configuration only
# Everything a run needs is registered, and the configuration is valid for both models.
#
# **What to expect** in check mode (CI, or no GPU): "configuration ok: 2 models x selectors [...] at r = 0.005"
# and "check-only mode (...): nothing was run". On a GPU with the models and IEMOCAP, the runs print each
# selector's SE / ACE / ESS (a specific set: ESS well below 0; random: about 0).

# %%
configs = [paper_config(m) for m in MODELS]
for cfg in configs:
    cfg.check(clips_given=True, lens_given=True)  # the model / corpus are only looked up when really running
assert "iemocap" in DATASETS and all(s in SELECTORS for s in PAPER_SELECTORS)
assert {"qwen2_5_omni", "audio_flamingo3"} <= set(ADAPTERS.names())
print(f"configuration ok: {len(configs)} models x selectors {list(PAPER_SELECTORS)} at r = {configs[0].top_frac}")


def model_available(model: str) -> bool:
    if Path(model).expanduser().is_dir():
        return True
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        try:
            from huggingface_hub import try_to_load_from_cache

            return isinstance(try_to_load_from_cache(model, "config.json"), str)
        except Exception:
            return False
    return True  # downloadable


check_only = "--check" in sys.argv or not torch.cuda.is_available() or not Path(IEMOCAP).is_dir()
missing = [m for m in MODELS if not model_available(m)]
if check_only or missing:
    why = ("--check" if "--check" in sys.argv else "no CUDA GPU" if not torch.cuda.is_available()
           else f"no IEMOCAP at {IEMOCAP}" if not Path(IEMOCAP).is_dir() else f"models not available: {missing}")
    print(f"check-only mode ({why}): nothing was run")
    raise SystemExit(0)

# %% [markdown]
# ## The runs
# `Lens.from_pretrained(..., dtype="bfloat16", device_map="auto")` loads each model once (spread over the
# visible GPUs); the run folder is resumable: run the cell again after an interruption.

# %%
from esn_lens.lens import Lens  # noqa: E402

for cfg in configs:
    lens = Lens.from_pretrained(cfg.model, dtype="bfloat16", device_map="auto")
    print(lens)
    out = RUNS / (Path(cfg.model).name.lower() + "_iemocap")
    results = run_pipeline(cfg, out, resume=out.exists(), lens=lens)
    for name, s in results["selectors"].items():
        d = s["deactivation"]
        print(f"{cfg.model} {name:>7}: SE {100 * d['se_mean']:+.1f}  ACE {100 * d['ace_mean']:+.1f}  "
              f"ESS {100 * d['ess_mean']:+.1f} points")
    del lens
    torch.cuda.empty_cache()
