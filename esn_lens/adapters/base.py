"""The adapter contract: the only place that knows a model family's module paths and input format.

An adapter maps TransformerLens-style site names (``blocks.{l}.mlp.hook_act``) onto the wrapped
model's modules, builds model inputs from audio and prompt text with the model's own processor,
and marks which positions are padding, special, audio or prompt text.
"""
from __future__ import annotations

from typing import Any, ClassVar, NamedTuple, Sequence

import numpy as np
import torch
from jaxtyping import Bool
from torch import Tensor, nn

from ..errors import InputError, UnsupportedModelError
from ..registry import Registry
from ..vocab import (HOOK_NAMES, SITE_ORDER, SITES, PositionMasks, check_site, fingerprint_of, hook_name,  # noqa: F401
                     parse_hook_name)
from .audio_time import AudioTimeMap


class SiteRow(NamedTuple):
    """One row of an adapter's site table: ``SiteRow(name, path, side)``.

    ``name``: the TransformerLens name (``"hook_embed"``, ``"blocks.3.mlp.hook_act"``, ``"logits"``, or a new kind's
    name); ``path``: the dotted module path from :meth:`Adapter.root`; ``side``: which value of that module --
    ``"output"``, ``"input"`` (its first input), ``"output0"`` (element 0 of a tuple output) or ``"hidden"``
    (``last_hidden_state`` of a model output). Rows are listed in forward order.
    """

    name: str
    path: str
    side: str

ADAPTERS: Registry[type["Adapter"]] = Registry("adapter")

#: the sites of a gated (SwiGLU) MLP, gate_proj -> act_fn (x up_proj) -> down_proj: site -> (attribute, side)
GATED_MLP_SITES: dict[str, tuple[str, str]] = dict(SITES)
#: the sites of a plain MLP, fc1 -> act -> fc2 (GPT-2 style, Whisper-style audio encoders): hook_act = hook_post
PLAIN_MLP_SITES: dict[str, tuple[str, str]] = {"pre": ("fc1", "output"), "act": ("act", "output"),
                                               "post": ("fc2", "input")}


def register_adapter(name: str):
    """Class decorator registering an :class:`Adapter` subclass under ``name`` (built-ins use it too)."""

    def deco(cls: type["Adapter"]) -> type["Adapter"]:
        cls.name = name
        ADAPTERS.register(name, cls)
        return cls

    return deco


class Adapter(AudioTimeMap):
    """Base adapter for Qwen2/Llama-style decoders whose layers hold ``mlp.{gate_proj,act_fn,up_proj,down_proj}``.

    Subclasses set ``layers_path`` (dotted path from the wrapped root module to the ``ModuleList`` of
    decoder layers) and implement :meth:`matches` and, for audio models, :meth:`build_inputs`.
    """

    name: ClassVar[str] = "base"
    layers_path: ClassVar[str] = "model.layers"
    audio_token: ClassVar[str | None] = None
    audio_tower_path: ClassVar[str | None] = None
    lm_head_path: ClassVar[str] = "lm_head"
    #: the ``logits`` site is the root's returned ``logits`` field, not ``lm_head``'s output (a family that transforms
    #: them after the head, e.g. Gemma 3n / Gemma 4's final soft-capping)
    returned_logits: ClassVar[bool] = False
    #: module whose ``inputs_embeds`` keyword input holds text + audio embeddings and that the root skips
    #: audio processing for when given ``inputs_embeds``; lets conditions reuse them (None: reuse the
    #: audio tower's output instead)
    embeds_reuse_path: ClassVar[str | None] = None
    supports_generate: ClassVar[bool] = True
    #: the longest audio the model hears (its processor cuts the rest), in seconds; None = no fixed window
    max_audio_seconds: ClassVar[float | None] = None
    #: Model classes / model_types this adapter claims (checked by the default :meth:`matches`).
    class_names: ClassVar[tuple[str, ...]] = ()
    model_types: ClassVar[tuple[str, ...]] = ()
    #: a generic adapter tried only after every specific one (whatever the registration order)
    fallback: ClassVar[bool] = False
    #: chat-turn markers of the family's template (ChatML by default): they delimit the user's prompt text
    turn_start: ClassVar[str | None] = "<|im_start|>"
    turn_end: ClassVar[str | None] = "<|im_end|>"
    user_role: ClassVar[str] = "user"
    #: the MLP's neuron sites, declared per adapter: site -> (attribute of the layer's MLP module, "output"|"input").
    #: Gated decoders keep :data:`GATED_MLP_SITES`; a plain fc1 -> act -> fc2 MLP sets :data:`PLAIN_MLP_SITES` (or
    #: its own attribute names, e.g. GPT-2's ``{"pre": ("c_fc", "output"), "act": ("act", "output"), ...}``).
    mlp_sites: ClassVar[dict[str, tuple[str, str]]] = GATED_MLP_SITES

    def __init__(self, model: nn.Module, processor: Any = None):
        self.model = model
        self.processor = processor
        layers = self.layers()
        if len(layers) == 0:
            raise UnsupportedModelError(f"{type(model).__name__}: no decoder layers at {self.layers_path!r}")
        self.check_mlp()

    def check_mlp(self) -> None:
        """Refuse a model whose layer MLP lacks this adapter's declared sites (an MoE adapter checks its blocks)."""
        mlp = self.mlp_module(0)
        for part, _ in self.mlp_sites.values():
            if not hasattr(mlp, part):
                kind = "a gated MLP" if self.mlp_sites is GATED_MLP_SITES else f"the MLP sites {self.mlp_sites}"
                raise UnsupportedModelError(f"{type(self.model).__name__}: layer MLP has no {part!r} (not {kind}; an "
                                            "adapter declares its MLP's sites in mlp_sites, e.g. PLAIN_MLP_SITES)")

    # -------------------------------------------------------------- model identity
    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        """Whether this adapter handles ``model`` (by class name or ``config.model_type``)."""
        mt = getattr(getattr(model, "config", None), "model_type", None)
        return type(model).__name__ in cls.class_names or (mt is not None and mt in cls.model_types)

    @property
    def family(self) -> str:
        """The model family (the adapter name; a backend wrapper reports its wrapped model's family)."""
        return self.name

    def root(self) -> nn.Module:
        """The module that is wrapped and called (the model itself by default)."""
        return self.model

    @property
    def config(self):
        return getattr(self.root(), "config", None)

    @property
    def fingerprint(self) -> str:
        """A stable hash of the model: family, shape, and its weights at bfloat16 precision (see
        :mod:`esn_lens.identity`).

        Identical for a model and its reloaded copy (float32 or bfloat16), different for another architecture, another
        training run or a fine-tuned copy; used to match saved stats and neuron sets to this model.
        """
        from ..identity import weights_signature

        cfg = self.config
        text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
        shape = dict(adapter=self.family, layers=self.n_layers, d_mlp=self.d_mlp,
                     hidden=getattr(text_cfg, "hidden_size", None), vocab=getattr(text_cfg, "vocab_size", None))
        return fingerprint_of(shape, extra="weights:" + weights_signature(self.model))


    # -------------------------------------------------------------- module paths
    def layers(self) -> nn.ModuleList:
        mod: Any = self.root()
        for part in self.layers_path.split("."):
            if not hasattr(mod, part):
                raise UnsupportedModelError(f"{type(self.model).__name__}: no module {self.layers_path!r} "
                                            f"(adapter {self.name!r})")
            mod = getattr(mod, part)
        return mod

    @property
    def n_layers(self) -> int:
        return len(self.layers())

    @property
    def d_mlp(self) -> int:
        pre = self.site_module(0, "pre")  # nn.Linear (out_features) or GPT-2's Conv1D (nf)
        return int(getattr(pre, "out_features", None) or getattr(pre, "nf"))

    def layer_path(self, layer: int) -> str:
        """Dotted path (from :meth:`root`) of a decoder layer (its input/output are the residual stream)."""
        return f"{self.layers_path}.{layer}"

    def mlp_path(self, layer: int) -> str:
        """Dotted path (from :meth:`root`) of a layer's gated MLP module."""
        return f"{self.layer_path(layer)}.mlp"

    def attn_path(self, layer: int) -> str:
        """Dotted path (from :meth:`root`) of a layer's attention block."""
        return f"{self.layer_path(layer)}.self_attn"

    @property
    def embed_path(self) -> str:
        """Dotted path (from :meth:`root`) of the token embedding (a sibling of the layer list)."""
        return f"{self.layers_path.rsplit('.', 1)[0]}.embed_tokens" if "." in self.layers_path else "embed_tokens"

    def mlp_module(self, layer: int) -> nn.Module:
        return self.root().get_submodule(self.mlp_path(layer))

    def call_args(self, inputs: dict[str, Tensor]) -> tuple[tuple, dict[str, Tensor]]:
        """How the root module is called with built inputs: ``root(*args, **kwargs)``."""
        return (), inputs

    def site_path(self, layer: int, site: str) -> tuple[str, str]:
        """``(dotted module path from the root, "output"|"input")`` of a site, from :attr:`mlp_sites`
        (override for a layout the table cannot say)."""
        if not 0 <= layer < self.n_layers:
            raise InputError(f"layer {layer} out of range 0..{self.n_layers - 1}")
        attr, side = self.mlp_sites[check_site(site)]
        return f"{self.mlp_path(layer)}.{attr}", side

    # -------------------------------------------------------------- the site table
    def site_table(self) -> list[SiteRow]:
        """Every named site of the model as :class:`SiteRow` s, in forward order: the one table that ``lens.site``,
        ``lens.site_names``, ``lens.hook_names``, ``lens.run(record=)`` and the docs read. A new site kind is one
        more row (override :meth:`layer_site_rows` for per-layer ones, or this method for the rest, calling super)."""
        rows = [SiteRow("hook_embed", self.embed_path, "output")]
        if self.audio_tower_path is not None:
            rows.append(SiteRow("audio_encoder", self.audio_tower_path, "hidden"))
        for layer in range(self.n_layers):
            rows += self.layer_site_rows(layer)
        logits = SiteRow("logits", "", "logits") if self.returned_logits else SiteRow("logits", self.lm_head_path, "output")
        return rows + [logits]

    def layer_site_rows(self, layer: int) -> list[SiteRow]:
        """The rows of one decoder layer, in forward order (the kinds of :data:`esn_lens.vocab.LAYER_SITE_KINDS`)."""
        b = f"blocks.{layer}"
        rows = [SiteRow(f"{b}.hook_resid_pre", self.layer_path(layer), "input"),
                SiteRow(f"{b}.hook_attn_out", self.attn_path(layer), "output0")]
        rows += [SiteRow(hook_name(layer, site), *self.site_path(layer, site)) for site in SITE_ORDER]
        return rows + [SiteRow(f"{b}.hook_mlp_out", self.mlp_path(layer), "output"),
                       SiteRow(f"{b}.hook_resid_post", self.layer_path(layer), "output0")]

    def site_module(self, layer: int, site: str) -> nn.Module:
        """The torch module of a site (for plain hooks in references)."""
        path, _ = self.site_path(layer, site)
        return self.root().get_submodule(path)

    # -------------------------------------------------------------- inputs
    @property
    def tokenizer(self):
        p = self.processor
        return getattr(p, "tokenizer", p)

    @property
    def sampling_rate(self) -> int:
        fe = getattr(self.processor, "feature_extractor", None)
        return int(getattr(fe, "sampling_rate", 16000))

    @property
    def device(self) -> torch.device:
        return next(self.root().parameters()).device

    def conversation(self, prompt: str, with_audio: bool = True, system: str | None = None) -> list[dict]:
        content: list[dict] = ([{"type": "audio", "audio": "clip"}] if with_audio else []) + [{"type": "text", "text": prompt}]
        conv = [{"role": "user", "content": content}]
        if system:
            conv.insert(0, {"role": "system", "content": [{"type": "text", "text": system}]})
        return conv

    def render_prompt(self, prompt: str, with_audio: bool = True, system: str | None = None) -> str:
        """The chat-templated text of one user turn (with the audio placeholder), ready for the processor."""
        templ = getattr(self.processor, "apply_chat_template", None)
        if templ is None or not (getattr(self.processor, "chat_template", None)
                                 or getattr(self.tokenizer, "chat_template", None)):
            raise InputError(f"{self.name}: the processor/tokenizer has no chat template; set "
                             "processor.chat_template (a Jinja template) before building inputs")
        try:
            text = templ(self.conversation(prompt, with_audio, system), add_generation_prompt=True, tokenize=False)
        except Exception:  # a template written for string content fails on a list of parts (TypeError in Jinja)
            text = None
        if isinstance(text, str) and prompt in text:
            return text
        # string content: the template cannot take a list of parts (or dropped them); the audio placeholder
        # goes in front of the prompt as text
        try:
            return templ(self.conversation_text(prompt, with_audio, system), add_generation_prompt=True, tokenize=False)
        except Exception as e:
            raise InputError(f"{self.name}: the chat template fails on both list-of-parts and string message content "
                             f"({type(e).__name__}: {e})") from None

    def conversation_text(self, prompt: str, with_audio: bool = True, system: str | None = None) -> list[dict]:
        """:meth:`conversation` with string content (for chat templates that only take strings)."""
        audio = (self.audio_token or "") if with_audio else ""
        conv = [{"role": "user", "content": audio + prompt}]
        if system:
            conv.insert(0, {"role": "system", "content": system})
        return conv

    def build_inputs(self, audios: Sequence[np.ndarray] | None, prompts: Sequence[str], *,
                     padding_side: str = "left", system: str | None = None) -> dict[str, Tensor]:
        """Tokenised model inputs for a batch of (audio at :attr:`sampling_rate`, prompt) pairs."""
        texts = [self.render_prompt(p, with_audio=audios is not None, system=system) for p in prompts]
        if audios is None:
            tok = self.tokenizer
            enc = tok(texts, return_tensors="pt", padding=True, padding_side=padding_side)
            return dict(enc)
        enc = self.processor(text=texts, audio=list(audios), sampling_rate=self.sampling_rate, return_tensors="pt",
                             text_kwargs={"padding": True, "padding_side": padding_side})
        return dict(enc)

    @classmethod
    def prepare_config(cls, config: Any) -> Any:
        """The checkpoint's config as the model should be built from it (default: unchanged; e.g. Gemma 3n swaps out
        a vision tower that needs a missing package). :func:`esn_lens.loading.load_model_and_processor` calls it."""
        return config

    @classmethod
    def load_processor(cls, path: str, trust_remote_code: bool = False) -> Any:
        """The processor (or tokenizer, for text models) of a checkpoint of this family."""
        from transformers import AutoProcessor, AutoTokenizer

        try:
            return AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
        except Exception:  # noqa: BLE001 - text-only checkpoints have just a tokenizer
            return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)

    def position_masks(self, inputs: dict[str, Tensor]) -> PositionMasks:
        """Masks of padding, special, audio and prompt-text positions of built inputs."""
        ids: Tensor = inputs["input_ids"]
        att = inputs.get("attention_mask")
        padding = (att == 0) if att is not None else torch.zeros_like(ids, dtype=torch.bool)
        tok = self.tokenizer
        special_ids = torch.tensor(sorted(set(tok.all_special_ids) | set(self._extra_special_ids())), dtype=ids.dtype)
        audio = self.audio_positions(ids)
        special = torch.isin(ids, special_ids) & ~audio
        user = self._user_turn(ids)
        known = user is not None
        prompt_text = ~padding & ~special & ~audio & (user if known else torch.zeros_like(padding))
        return PositionMasks(padding=padding, special=special, audio=audio, prompt_text=prompt_text, prompt_known=known)

    def audio_positions(self, ids: Tensor) -> Bool[Tensor, "batch pos"]:
        if self.audio_token is None:
            return torch.zeros_like(ids, dtype=torch.bool)
        aid = self.tokenizer.convert_tokens_to_ids(self.audio_token)
        return ids == aid

    def _extra_special_ids(self) -> list[int]:
        tok = self.tokenizer
        out = []
        for t in getattr(tok, "added_tokens_decoder", {}).values():
            if getattr(t, "special", False):
                out.append(tok.convert_tokens_to_ids(t.content))
        return out

    def _user_turn(self, ids: Tensor) -> Bool[Tensor, "batch pos"] | None:
        """Positions inside a user turn (between ``turn_start`` + ``user_role`` and the next ``turn_end``);
        None when the tokenizer does not know the markers (then the prompt text is unknown, not guessed)."""
        tok = self.tokenizer
        if self.turn_start is None or self.turn_end is None:
            return None
        start = tok.convert_tokens_to_ids(self.turn_start)
        end = tok.convert_tokens_to_ids(self.turn_end)
        unk = getattr(tok, "unk_token_id", None)
        if start is None or end is None or start == unk or end == unk:
            return None
        # segment counter: turns begin at <|im_start|>; a turn is "user" if the next tokens spell 'user'
        is_start = ids == start
        turn = is_start.long().cumsum(1)
        user_ids = tok(self.user_role, add_special_tokens=False).input_ids
        k = len(user_ids)
        B, P = ids.shape
        turn_is_user = torch.zeros(B, P + 1, dtype=torch.bool)
        rows, cols = torch.nonzero(is_start, as_tuple=True)
        for r, c in zip(rows.tolist(), cols.tolist()):  # one loop per turn, not per neuron
            if ids[r, c + 1: c + 1 + k].tolist() == user_ids:
                turn_is_user[r, turn[r, c]] = True
        in_user = torch.gather(turn_is_user, 1, turn)
        # exclude the role name and the newline after it
        role = torch.zeros_like(in_user)
        for r, c in zip(rows.tolist(), cols.tolist()):
            role[r, c: c + k + 2] = True
        return in_user & ~role & (ids != end)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(layers={self.n_layers}, d_mlp={self.d_mlp}, path={self.layers_path!r})"


def adapter_class_for_config(config: Any) -> type[Adapter]:
    """The registered adapter class claiming a checkpoint's config (by architecture or model_type), else the base."""
    archs = set(getattr(config, "architectures", None) or [])
    mt = getattr(config, "model_type", None)
    for key in ADAPTERS.names():
        cls = ADAPTERS.get(key)
        if archs & set(cls.class_names) or (mt is not None and mt in cls.model_types):
            return cls
    return Adapter


def adapter_for(model: nn.Module, processor: Any = None, name: str | None = None) -> Adapter:
    """Choose the registered adapter for ``model`` (or the one named), with an error listing families."""
    if name is not None:
        return ADAPTERS.get(name)(model, processor)
    # an exact class-name claim wins (a TransformerBridge also carries its model's model_type); then each specific
    # adapter's own test in registration order; generic (fallback) adapters last, whatever their registration order
    for key in ADAPTERS.names():
        cls = ADAPTERS.get(key)
        if type(model).__name__ in cls.class_names:
            return cls(model, processor)
    ordered = sorted(ADAPTERS.names(), key=lambda k: ADAPTERS.get(k).fallback)  # stable: registration order kept
    for key in ordered:
        cls = ADAPTERS.get(key)
        if cls.matches(model):
            return cls(model, processor)
    mt = getattr(getattr(model, "config", None), "model_type", None)
    raise UnsupportedModelError(
        f"no esn_lens adapter for {type(model).__name__} (model_type={mt!r}); supported: "
        + "; ".join(f"{k} ({', '.join(ADAPTERS.get(k).class_names + ADAPTERS.get(k).model_types)})" for k in ADAPTERS.names())
        + ". Register one with esn_lens.register_adapter.")
