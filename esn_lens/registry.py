"""A tiny named registry shared by adapters, selectors, interventions and datasets.

Built-ins register themselves through the same public decorator a user's extension uses::

    from esn_lens.selectors import SELECTORS
    @SELECTORS.register("my_selector")
    def my_selector(stats, **kw): ...
"""
from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


def _where(obj: object) -> str:
    """The module an extension was defined in, for error messages: ``module 'myplug.esn'``."""
    return f"module {getattr(obj, '__module__', None) or '?'!r}"


class Registry(Generic[T]):
    """A name -> object mapping with a decorator, clear errors and listing."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, obj: T | None = None, *, overwrite: bool = False) -> Callable[[T], T] | T:
        """Register ``obj`` under ``name``; used bare as a decorator: ``@REG.register("name")``."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")

        def _add(o: T) -> T:
            if name in self._items and not overwrite and self._items[name] is not o:
                raise KeyError(f"{self.kind} {name!r} of {_where(o)} clashes with the {self.kind} {name!r} already "
                               f"registered by {_where(self._items[name])}; rename one, or pass overwrite=True to replace it")
            self._items[name] = o
            return o

        return _add(obj) if obj is not None else _add

    def get(self, name: str) -> T:
        """Look ``name`` up, with an error that lists what is registered."""
        try:
            return self._items[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} {name!r}; registered: {', '.join(sorted(self._items)) or '(none)'}") from None

    def unregister(self, name: str) -> T:
        """Remove and return ``name`` (e.g. a test's temporary extension)."""
        if name not in self._items:
            raise KeyError(f"unknown {self.kind} {name!r}; registered: {', '.join(sorted(self._items)) or '(none)'}")
        return self._items.pop(name)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def names(self) -> list[str]:
        return list(self._items)

    def items(self):
        return self._items.items()

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind}: {', '.join(self._items)})"
