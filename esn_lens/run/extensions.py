"""Options and preflight for a run's extensions (selectors, interventions), and the plugin record of a run.

- ``--selector-option NAME.KEY=VALUE`` / ``--intervention-option NAME.KEY=VALUE`` (``RunConfig.selector_options``,
  ``intervention_options``: name -> {key: value}) reach the selector / intervention as keyword options and are part
  of the run's identity. VALUE is read as JSON when it parses (``3``, ``0.5``, ``true``, ``[1, 2]``), else as text.
- A selector or intervention whose signature names ``stats`` or ``attribution`` (keyword) gets the run's
  :class:`~esn_lens.stats.NeuronStats` / attribution (:func:`run_context`).
- :func:`preflight` exercises every selector and the intervention of a run before the model loads: the selector
  scores tiny real statistics, the intervention is built on dummy units and applied to a dummy value; a failure is
  one :class:`~esn_lens.errors.InputError` line naming the extension and the module (plugin) it comes from.
- :func:`plugin_record` lists the plugin modules a run used with their distributions' versions (``config.json``).
"""
from __future__ import annotations

import inspect
import json
import sys
from typing import Any, Callable, Mapping, Sequence

import torch

from ..errors import InputError

__all__ = ["parse_option", "options_dict", "run_context", "preflight", "plugin_record", "origin"]

#: keyword parameters through which an extension asks for the run's products
CONTEXT_PARAMS = ("stats", "attribution")


def parse_option(text: str, what: str = "--selector-option") -> tuple[str, str, Any]:
    """``"NAME.KEY=VALUE"`` -> ``(NAME, KEY, value)`` (value read as JSON when it parses, else the text)."""
    head, eq, raw = str(text).partition("=")
    name, dot, key = head.strip().rpartition(".")
    if not eq or not dot or not name or not key.isidentifier():
        raise InputError(f"{what} {text!r}: expected NAME.KEY=VALUE (e.g. lape.filter_percentile=95)")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return name, key, value


def options_dict(texts: Sequence[str], what: str) -> dict[str, dict[str, Any]]:
    """Options given on the command line as name -> {key: value} (a later KEY wins)."""
    out: dict[str, dict[str, Any]] = {}
    for t in texts:
        name, key, value = parse_option(t, what)
        out.setdefault(name, {})[key] = value
    return out


def origin(obj: Any) -> str:
    """Where an extension comes from: ``"plugin module 'myplug.esn'"`` or ``"esn_lens"`` for built-ins."""
    mod = getattr(obj, "__module__", None) or "?"
    return "esn_lens" if mod.split(".")[0] == "esn_lens" else f"plugin module {mod!r}"


def _accepts(fn: Callable, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    p = params.get(name)
    return p is not None and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)


def run_context(fn: Callable, products: Mapping[str, Any], *, skip_first: bool = False) -> dict[str, Any]:
    """The run products ``fn`` asks for by keyword (``stats``, ``attribution``), from ``products``.
    ``skip_first``: a selector's first parameter is its input (stats), not a request."""
    try:
        params = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return {}
    if skip_first:
        params = params[1:]
    return {k: products[k] for k in CONTEXT_PARAMS if k in params and _accepts(fn, k) and products.get(k) is not None}


def _tiny_stats(emotions: Sequence[str], site: str):
    from ..stats import NeuronStats

    g = torch.Generator().manual_seed(0)
    s = NeuronStats(tuple(emotions), n_layers=2, d_mlp=8, site=site)
    acts = torch.randn(len(emotions), 2, 5, 8, generator=g)  # (batch=E, layer, pos, neuron)
    s.add(acts.transpose(0, 1), torch.arange(len(emotions)), torch.ones(len(emotions), 5, dtype=torch.bool))
    return s


def preflight(selectors: Sequence[str], selector_options: Mapping[str, Mapping[str, Any]], intervention: str,
              intervention_options: Mapping[str, Mapping[str, Any]], *, site: str = "act",
              emotions: Sequence[str] = ("a", "b", "c")) -> None:
    """Exercise the run's selectors and intervention on tiny inputs before any model loads (see the module doc)."""
    from ..interventions import INTERVENTIONS, Edit
    from ..selectors import SELECTORS, find_neurons

    stray = sorted(set(selector_options) - set(selectors))
    if stray:
        raise InputError(f"--selector-option for {stray}, which the run does not use (selectors: {list(selectors)})")
    stray = sorted(set(intervention_options) - {intervention})
    if stray:
        raise InputError(f"--intervention-option for {stray}, but the run's intervention is {intervention!r}")
    stats = _tiny_stats(emotions, site)
    products = {"stats": stats, "attribution": None}
    for name in selectors:
        if name == "atp":
            continue  # scores attribution (collected from the model); its options are checked at selection
        fn = SELECTORS.get(name)
        opts = dict(selector_options.get(name, {}))
        try:
            ns = find_neurons(stats, name, count=1, **opts, **run_context(fn, products, skip_first=True))
            assert ns.masks.shape == (len(emotions), 2, 8)
        except Exception as e:  # noqa: BLE001 -- any failure of a third-party selector is refused here
            raise InputError(f"selector {name!r} ({origin(fn)}) fails on tiny statistics with options {opts}: "
                             f"{type(e).__name__}: {_first_line(e)}") from None
    fn = INTERVENTIONS.get(intervention)
    opts = dict(intervention_options.get(intervention, {}))
    units = torch.zeros(2, 8, dtype=torch.bool)
    units[0, :2] = True
    try:
        edit = fn(units, site=site, **opts, **run_context(fn, products))
        if not isinstance(edit, Edit):
            raise TypeError(f"it returned {type(edit).__name__}, not an esn_lens Edit")
        edit.check_shape(2, 8)
        value = torch.randn(2, 3, 8)
        mask = edit.unit_mask(value, 0)
        if mask is not None:
            edit.edit_(value, 0, mask)
        if not torch.isfinite(value).all():
            raise ValueError("the edited dummy value is not finite")
    except Exception as e:  # noqa: BLE001
        raise InputError(f"intervention {intervention!r} ({origin(fn)}) fails on dummy units with options {opts}: "
                         f"{type(e).__name__}: {_first_line(e)}") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else "(no message)"


def plugin_record(modules: Sequence[str]) -> list[dict[str, Any]]:
    """``[{"module", "distribution", "version", "file"}]`` of plugin modules (those imported; version None when the
    module belongs to no installed distribution)."""
    from importlib.metadata import packages_distributions, version

    dists = packages_distributions()
    out = []
    for m in modules:
        mod = sys.modules.get(m)
        top = m.split(".")[0]
        dist = (dists.get(top) or [None])[0]
        try:
            ver = version(dist) if dist else getattr(mod, "__version__", None)
        except Exception:  # noqa: BLE001 -- a broken distribution record: no version
            ver = None
        out.append({"module": m, "distribution": dist, "version": ver, "file": getattr(mod, "__file__", None)})
    return out
