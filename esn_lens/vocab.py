"""The shared vocabulary (the ground floor): site, position, mode and answer names, hook names, position masks and the
one model fingerprint. Every other module (adapters, statistics, interventions, evaluation, the command line) takes its
names and choices from here.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
from jaxtyping import Bool
from torch import Tensor

from .errors import InputError

#: an MLP neuron site: "pre" = gate_proj output, "act" = act_fn output (the paper's), "post" = down_proj input
SiteName = Literal["pre", "act", "post"]
#: site -> (attribute of the MLP module, which side of it: "output" or "input"), in forward order.
SITES: dict[str, tuple[str, str]] = {
    "pre": ("gate_proj", "output"),   # TransformerLens hook_pre
    "act": ("act_fn", "output"),      # the paper's site: act_fn(gate_proj(x))
    "post": ("down_proj", "input"),   # TransformerLens hook_post: act_fn(gate) * up
}
SITE_ORDER: tuple[str, ...] = tuple(SITES)
HOOK_NAMES: dict[str, str] = {"pre": "hook_pre", "act": "hook_act", "post": "hook_post"}
#: the kinds of named site of one decoder layer, in forward order (full name: ``blocks.{layer}.{kind}``); the rows of
#: an adapter's site table (:meth:`esn_lens.adapters.Adapter.site_table`) give each its module
LAYER_SITE_KINDS: tuple[str, ...] = ("hook_resid_pre", "hook_attn_out", "mlp.hook_pre", "mlp.hook_act", "mlp.hook_post",
                                     "hook_mlp_out", "hook_resid_post")
#: other spellings accepted for a site name (whole names, or the part after ``blocks.{layer}.``)
SITE_ALIASES: dict[str, str] = {"embed": "hook_embed", "hook_audio": "audio_encoder", "unembed": "logits",
                                "attn": "hook_attn_out", "mlp": "hook_mlp_out"}

#: a named set of counted positions (statistics, probes, edits)
PositionSet = Literal["valid", "audio", "no_prompt", "last"]
POSITION_SETS: tuple[str, ...] = get_args(PositionSet)
#: positions an edit can be limited to ("all" = every position, prefill and generated tokens)
EDIT_POSITIONS: tuple[str, ...] = ("all",) + POSITION_SETS

#: how SER answers are read: constrained option scoring, or greedy generation + parsing (the paper's)
Mode = Literal["constrained", "generate"]
MODES: tuple[str, ...] = get_args(Mode)
#: what the options are in constrained mode: option numbers or the emotion words
Answer = Literal["digit", "word"]
ANSWERS: tuple[str, ...] = get_args(Answer)


def check_choice(what: str, value: Any, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of ``choices``, else an :class:`InputError` naming both."""
    if value not in choices:
        raise InputError(f"{what} must be one of {list(choices)}, got {value!r}")
    return value


def check_site(site: str) -> str:
    """``site`` if it is a known MLP site name."""
    if site not in SITES:
        raise InputError(f"unknown site {site!r}; expected one of {list(SITES)} "
                         "(pre = gate_proj output, act = act_fn output, post = down_proj input)")
    return site


def hook_name(layer: int, site: str) -> str:
    """TransformerLens-style name of a site: ``hook_name(3, "act") == "blocks.3.mlp.hook_act"``."""
    return f"blocks.{layer}.mlp.{HOOK_NAMES[check_site(site)]}"


def parse_hook_name(name: str) -> tuple[int, str]:
    """Inverse of :func:`hook_name`: ``parse_hook_name("blocks.3.mlp.hook_post") == (3, "post")``."""
    parts = name.split(".")
    inv = {v: k for k, v in HOOK_NAMES.items()}
    if len(parts) != 4 or parts[0] != "blocks" or parts[2] != "mlp" or parts[3] not in inv or not parts[1].isdigit():
        raise InputError(f"unknown hook name {name!r}; expected 'blocks.<layer>.mlp.<{'|'.join(inv)}>'")
    return int(parts[1]), inv[parts[3]]


@dataclass
class PositionMasks:
    """Boolean masks over (batch, pos) of a built input."""

    padding: Bool[Tensor, "batch pos"]
    special: Bool[Tensor, "batch pos"]
    audio: Bool[Tensor, "batch pos"]
    prompt_text: Bool[Tensor, "batch pos"]
    #: False when the chat template's turn markers are unknown: the prompt text cannot be told apart
    prompt_known: bool = True

    @property
    def valid(self) -> Bool[Tensor, "batch pos"]:
        """The paper's counted positions: not padding, not special tokens (audio tokens count)."""
        return ~self.padding & ~self.special

    def last_token(self) -> Bool[Tensor, "batch pos"]:
        """The last non-padding position of each row."""
        idx = (~self.padding).long().cumsum(1).argmax(1)
        m = torch.zeros_like(self.padding)
        m[torch.arange(m.shape[0]), idx] = True
        return m

    def select(self, positions: str) -> Bool[Tensor, "batch pos"]:
        """Mask for a named position set: valid | audio | no_prompt (valid minus prompt text) | last."""
        if positions == "valid":
            return self.valid
        if positions == "audio":
            if not bool(self.audio.any()):
                raise InputError("positions 'audio': this batch has no audio positions (a text-only model or batch); "
                                 "use positions='valid' or another position set")
            return self.audio & ~self.padding
        if positions == "no_prompt":
            if not self.prompt_known:
                raise InputError("positions 'no_prompt': this model's chat template has turn markers the adapter does "
                                 "not know, so the prompt text cannot be excluded; set the adapter's turn_start / "
                                 "turn_end / user_role, or use positions='valid'")
            return self.valid & ~self.prompt_text
        if positions == "last":
            return self.last_token()
        raise InputError(f"unknown positions {positions!r}; expected one of {', '.join(POSITION_SETS)}")


def fingerprint_of(config_dict: dict[str, Any], extra: str = "") -> str:
    """The one model fingerprint: a short stable hash of a model's shape (and ``extra``, e.g. a weight sign pattern),
    used to match saved stats and neuron sets to a model. Example: ``fingerprint_of({"layers": 2}) != fingerprint_of({})``."""
    keys = sorted(k for k in config_dict if k not in {"_name_or_path", "transformers_version", "torch_dtype", "dtype"})
    text = repr([(k, repr(config_dict[k])) for k in keys]) + extra
    return hashlib.sha256(text.encode()).hexdigest()[:16]
