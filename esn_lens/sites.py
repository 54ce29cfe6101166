"""The open core: nnsight tracing of the wrapped model, with TransformerLens names for its sites.

``lens.trace(batch)`` returns nnsight's own tracer (``with lens.trace(batch) as tracer:``), and the
names below are thin views over real nnsight envoys of the user's model (no copy, nothing rewritten):

=================================  ==========================================================
``lens.embed``                     token embedding output (``embed_tokens``)
``lens.audio_encoder``             the audio tower's output hidden states (audio models only)
``lens.blocks[l].hook_resid_pre``  the decoder layer's input hidden states
``lens.blocks[l].attn``            the attention block's output (``hook_attn_out``)
``lens.blocks[l].mlp.hook_pre``    gate_proj output
``lens.blocks[l].mlp.hook_act``    act_fn output (the paper's neuron site)
``lens.blocks[l].mlp.hook_post``   down_proj input (act_fn(gate) * up)
``lens.blocks[l].mlp``             the MLP's output (``hook_mlp_out``)
``lens.blocks[l].hook_resid_post`` the decoder layer's output hidden states
``lens.logits``                    the LM head's output (batch, pos, vocab); the returned logits where the model
                                   transforms them (Gemma 3n's soft-capping)
=================================  ==========================================================

Each :class:`Site` has ``.output`` (read, ``.save()``, assign, index-assign), ``.save()``, ``.skip(value)``
(for module outputs) and ``.envoy`` (the raw nnsight envoy). Everything nnsight offers works on them:
``tracer.invoke`` (several batches in one forward), ``with loss.backward(): x.grad``, ``tracer.stop()``,
``tracer.iter`` in generation. Accesses follow forward order, as in any nnsight trace.

The table is built once from the adapter's site table (:meth:`esn_lens.adapters.Adapter.site_table`, rows
``SiteRow(name, path, side)`` in forward order): :class:`SiteTable`. The library's own operations (edits, statistics,
probes) produce hooks on these sites that the trace attaches for its duration, so they compose with user code in the
same forward; they must be called before the model enters their sites (else they refuse, naming the site).
At a site, a hook sees the value after the user's nnsight edits of that site (nnsight hands a module's
output to the trace body before torch's forward hooks run).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from torch import Tensor

from .errors import InputError
from .vocab import SITE_ALIASES


# ---------------------------------------------------------------------- named sites
#: sides that name a field of a model output: side -> field
FIELD_SIDES: dict[str, str] = {"hidden": "last_hidden_state", "logits": "logits"}


def stacked_index(side: str) -> tuple[str, int | None]:
    """``("input", 0)`` for ``"input[0]"`` (row 0 along dim 0 of a stacked tensor, e.g. Gemma 3n's AltUp residual);
    ``(side, None)`` for the other sides."""
    if side.endswith("]") and "[" in side:
        base, k = side[:-1].split("[", 1)
        return base, int(k)
    return side, None


def is_input_side(side: str) -> bool:
    """Whether a site's value is its module's (first) input: ``"input"`` or ``"input[k]"``."""
    return stacked_index(side)[0] == "input"


def _unwrap(out: Any, side: str) -> Tensor:
    """The tensor a site names in its module's output (or input): the value itself, row k of a stacked tensor,
    element 0, or a field (``last_hidden_state``, ``logits``) of a model output."""
    base, k = stacked_index(side)
    if k is not None:
        return (out if isinstance(out, Tensor) else out[0])[k]
    if side in ("output", "input") or isinstance(out, Tensor):
        return out
    if side == "output0":
        return out[0]
    field = FIELD_SIDES[side]
    if hasattr(out, "keys"):
        return out[field]
    return out[0] if side == "hidden" else getattr(out, field)


def _rewrap(out: Any, side: str, new: Tensor) -> Any:
    """The module output with the site's tensor replaced by ``new`` (the inverse of :func:`_unwrap`)."""
    base, k = stacked_index(side)
    if k is not None:
        full = (out if isinstance(out, Tensor) else out[0]).clone()
        full[k] = new
        return full if isinstance(out, Tensor) else (full, *out[1:])
    if side == "output" or isinstance(out, Tensor):
        return new
    if side == "output0":
        return (new, *out[1:])
    if hasattr(out, "keys"):
        return out.__class__(**{**out, FIELD_SIDES[side]: new})
    return (new, *out[1:])


class Site:
    """A named value of the model inside a trace: an nnsight envoy plus the side of it that holds the value.

    ``side``: ``"output"`` (the module's output), ``"input"`` (its first input), ``"output0"`` (element 0 of
    a tuple output, e.g. attention), ``"hidden"`` (``last_hidden_state`` of a model output), ``"logits"`` (``logits``
    of a model output) or ``"input[k]"`` / ``"output[k]"`` (row k along dim 0 of a stacked tensor).
    Example (inside ``with lens.trace(batch):``): ``h = lens.blocks[2].hook_resid_post.output.save()``.
    """

    def __init__(self, name: str, envoy: Any, side: str = "output"):
        self.name, self.envoy, self.side = name, envoy, side

    @property
    def output(self) -> Any:
        """The site's value (a real tensor inside the trace)."""
        if is_input_side(self.side):
            return _unwrap(self.envoy.input, self.side)
        return _unwrap(self.envoy.output, self.side)

    @output.setter
    def output(self, value: Any) -> None:
        if is_input_side(self.side):
            self.envoy.input = _rewrap(self.envoy.input, self.side, value)
        else:
            self.envoy.output = _rewrap(self.envoy.output, self.side, value)

    def save(self) -> Any:
        """Keep the value past the trace: ``lens.logits.save()`` is ``lens.logits.output.save()``."""
        import nnsight

        return nnsight.save(self.output)

    def skip(self, replacement: Any) -> None:
        """Skip the module and use ``replacement`` as its output (module-output sites only)."""
        if is_input_side(self.side):
            raise InputError(f"{self.name} is a module's input; .skip() replaces a module's output")
        self.envoy.skip(replacement)

    def __repr__(self) -> str:
        return f"Site({self.name!r}, {self.side} of {self.envoy.path})"


class MLPSite(Site):
    """``lens.blocks[l].mlp``: the MLP output, with its neuron sites ``hook_pre``, ``hook_act``, ``hook_post``."""

    def __init__(self, name: str, envoy: Any, hook_pre: Site, hook_act: Site, hook_post: Site):
        super().__init__(name, envoy, "output")
        self.hook_pre, self.hook_act, self.hook_post = hook_pre, hook_act, hook_post

    def site(self, site: str) -> Site:
        """The neuron site by its short name: ``"pre"``, ``"act"`` or ``"post"``."""
        return {"pre": self.hook_pre, "act": self.hook_act, "post": self.hook_post}[site]


@dataclass(frozen=True)
class BlockSites:
    """The named sites of one decoder layer, in forward order."""

    hook_resid_pre: Site
    attn: Site
    mlp: MLPSite
    hook_resid_post: Site

    @property
    def hook_attn_out(self) -> Site:
        return self.attn

    @property
    def hook_mlp_out(self) -> Site:
        return self.mlp


class Blocks:
    """``lens.blocks``: a read-only list of :class:`BlockSites` (negative indices allowed)."""

    def __init__(self, blocks: list[BlockSites]):
        self._blocks = blocks

    def __getitem__(self, i: int) -> BlockSites:
        n = len(self._blocks)
        if not isinstance(i, int) or not -n <= i < n:
            raise InputError(f"block {i!r} out of range: the model has {n} decoder layers (0..{n - 1})")
        return self._blocks[i]

    def __len__(self) -> int:
        return len(self._blocks)

    def __iter__(self):
        return iter(self._blocks)


def envoy_at(root: Any, path: str) -> Any:
    """The nnsight envoy at a dotted module path (``"model.layers.3.mlp"``) under ``root`` (``""``: the root)."""
    env = root
    for part in path.split(".") if path else ():
        env = env[int(part)] if part.isdigit() else getattr(env, part)
    return env


class MissingSite(Site):
    """A named site the adapter does not map (e.g. a custom model without ``embed_tokens``): any use says how to fix it."""

    def __init__(self, name: str, why: str):
        super().__init__(name, None, "output")
        self.why = why

    def _refuse(self, *_: Any) -> Any:
        raise InputError(f"{self.name}: {self.why}")

    output = property(_refuse, _refuse)  # type: ignore[assignment]
    save = skip = _refuse  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"MissingSite({self.name!r})"


def _site_or_missing(nn: Any, row: Any, adapter: Any) -> Site:
    try:
        return Site(row.name, envoy_at(nn, row.path), row.side)
    except (AttributeError, IndexError):
        return MissingSite(row.name, f"the model has no module {row.path!r}; fix {type(adapter).__name__}'s site "
                                     f"table row for it (adapter.site_table())")


class SiteTable:
    """The named sites of a wrapped model, in forward order, built once from the adapter's site table
    (:meth:`esn_lens.adapters.Adapter.site_table`): ``table[name]``, ``table.names()``, and the views ``blocks``,
    ``embed``, ``audio_encoder``, ``logits``."""

    def __init__(self, nn: Any, adapter: Any):
        rows = adapter.site_table()
        self.sites: dict[str, Site] = {r.name: _site_or_missing(nn, r, adapter) for r in rows}
        blocks = []
        for layer in range(adapter.n_layers):
            g = lambda kind: self.sites[f"blocks.{layer}.{kind}"]  # noqa: E731
            out = g("hook_mlp_out")
            mlp = MLPSite(out.name, out.envoy, g("mlp.hook_pre"), g("mlp.hook_act"), g("mlp.hook_post"))
            self.sites[mlp.name] = mlp
            blocks.append(BlockSites(g("hook_resid_pre"), g("hook_attn_out"), mlp, g("hook_resid_post")))
        self.blocks = Blocks(blocks)
        self.embed = self.sites.get("hook_embed") or MissingSite("hook_embed", "the adapter's site table has no row for it")
        self.audio_encoder = self.sites.get("audio_encoder")
        self.logits = self.sites.get("logits") or MissingSite("logits", "the adapter's site table has no row for it")

    def names(self) -> list[str]:
        """Every site name, in forward order."""
        return list(self.sites)

    def __getitem__(self, name: str) -> Site:
        """A site from its TransformerLens name (or an alias: ``embed``, ``unembed``, ``blocks.{l}.attn``, ...)."""
        if not isinstance(name, str):
            raise InputError(f"a site name must be a string such as 'blocks.0.mlp.hook_act', got {type(name).__name__}")
        key = SITE_ALIASES.get(name, name)
        parts = key.split(".", 2)
        if len(parts) == 3 and parts[0] == "blocks":
            key = f"blocks.{parts[1]}.{SITE_ALIASES.get(parts[2], parts[2])}"
            if parts[1].lstrip("-").isdigit() and key not in self.sites:
                layer, n = int(parts[1]), len(self.blocks)
                if not 0 <= layer < n and f"blocks.0.{key.split('.', 2)[2]}" in self.sites:
                    if -n <= layer < 0:
                        return self[f"blocks.{layer + n}.{parts[2]}"]
                    raise InputError(f"{name}: layer {layer} out of range, the model has {n} decoder layers (0..{n - 1})")
        if key in self.sites:
            return self.sites[key]
        if key == "audio_encoder":
            raise InputError("audio_encoder: this model has no audio encoder")
        kinds = sorted({n.split(".", 2)[2] for n in self.sites if n.startswith("blocks.0.")})
        raise InputError(f"unknown site name {name!r}; expected one of "
                         f"{[n for n in self.sites if not n.startswith('blocks.')]} or blocks.<layer>.<{'|'.join(kinds)}>")


class SiteModel(Protocol):
    """What library operations need of a wrapped model to produce their hooks (a :class:`~esn_lens.lens.Lens`
    satisfies it; nothing below the facade refers to the facade itself)."""

    n_layers: int
    d_mlp: int
    blocks: Blocks

    def site(self, name: str) -> Site: ...
