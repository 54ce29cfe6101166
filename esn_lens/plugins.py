"""Plugins: third-party modules that register selectors, interventions, adapters or datasets on import.

A package advertises its module in the ``esn_lens.plugins`` entry-point group (``pyproject.toml``)::

    [project.entry-points."esn_lens.plugins"]
    myplug = "myplug.esn"          # a module whose import runs @SELECTORS.register(...) etc.

and ``load_entry_point_plugins()`` imports every such module. ``load_plugin("myplug.esn")`` imports one module by
name (what ``esn-lens --plugin MODULE`` does). Both raise :class:`~esn_lens.errors.InputError` with the plugin's
name and the underlying error when the import fails.
"""
from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from types import ModuleType

from .errors import InputError

__all__ = ["PLUGIN_GROUP", "load_entry_point_plugins", "load_plugin", "loaded_plugins"]

#: the entry-point group esn_lens reads plugins from
PLUGIN_GROUP = "esn_lens.plugins"
_LOADED: list[str] = []  # plugin modules imported so far, in order (a run records them in config.json)


def loaded_plugins() -> list[str]:
    """The plugin modules imported so far (``load_plugin`` and entry points), in load order, each once."""
    return list(_LOADED)


def _note(module: str) -> None:
    if module not in _LOADED:
        _LOADED.append(module)


def load_plugin(module_name: str) -> ModuleType:
    """Import ``module_name`` (a dotted module path) so that its registrations run; return the module.

    Example: ``load_plugin("my_selectors")`` then ``find_neurons(stats, "my_selector", top_frac=0.01)``.
    """
    if not isinstance(module_name, str) or not module_name.strip():
        raise InputError(f"plugin: expected a module name, got {module_name!r}")
    try:
        mod = importlib.import_module(module_name.strip())
    except Exception as e:  # an ImportError, or any error raised by the plugin's own module code
        msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
        raise InputError(f"cannot import plugin {module_name!r}: {type(e).__name__}: {msg}") from e
    _note(module_name.strip())
    return mod


def load_entry_point_plugins(group: str = PLUGIN_GROUP) -> list[str]:
    """Import every module advertised in the entry-point ``group``; return the entry-point names loaded, sorted.

    Each entry point's value names a module (``myplug = "myplug_mod"``; an ``"module:object"`` value imports the
    module and looks the object up, nothing is called). A plugin that fails to import raises :class:`InputError` naming the entry point and the error.
    Loading twice is harmless: modules are imported once.
    """
    loaded: list[str] = []
    seen: set[tuple[str, str]] = set()
    for ep in sorted(entry_points(group=group), key=lambda ep: (ep.name, ep.value)):
        if (ep.name, ep.value) in seen:  # the same distribution found twice on sys.path
            continue
        seen.add((ep.name, ep.value))
        try:
            ep.load()
        except Exception as e:
            msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
            raise InputError(f"cannot load esn_lens plugin {ep.name!r} ({ep.value}, entry-point group {group!r}): "
                             f"{type(e).__name__}: {msg}") from e
        _note(ep.value.split(":")[0].strip())
        loaded.append(ep.name)
    return loaded
