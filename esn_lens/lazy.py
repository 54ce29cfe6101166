"""Names built on first use (keeps ``import esn_lens`` cheap): a PEP 562 module ``__getattr__`` and class naming."""
from __future__ import annotations

from typing import Any, Callable


def published(cls: type, module: str, name: str) -> type:
    """``cls`` named as if defined at the top of ``module`` (pickling, reprs, ``from module import name``)."""
    cls.__module__, cls.__qualname__ = module, name
    return cls


def lazy_attributes(module: str, factories: dict[str, Callable[[], Any]]) -> Callable[[str], Any]:
    """A module ``__getattr__`` serving ``factories[name]()`` for each lazy name (cache the factories yourself)."""

    def __getattr__(name: str) -> Any:
        if name in factories:
            return factories[name]()
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__
