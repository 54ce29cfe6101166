"""The run's stage registry and the products context every stage reads and writes through.

A stage is a function ``fn(run)`` registered with what it ``needs`` and ``produces`` (product names)::

    from esn_lens.run import register_stage

    @register_stage("pool_size", needs=["pool_ids"], produces=["pool_size"], after="stats")
    def pool_size(run):
        run.pool_size = len(run.pool_ids)        # reads a declared need, sets a declared product

The run walks :func:`stage_order` (producers before consumers and the ``after`` / ``before`` constraints; a stage
naming ``after`` runs right behind that stage when free to, the others in registration order). Each stage gets a :class:`StageContext`: reading a product it did not declare in ``needs``, setting one it
did not declare in ``produces``, or returning without setting a declared product raises :class:`StageError` naming
the stage. A stage skipped by its ``when(cfg)`` leaves its products ``None``. Everything else (``cfg``, ``folder``,
``lens``, ``par``, ``log``, ``model_id``, ``evaluate``, ``accumulate``) comes from the :class:`~esn_lens.run.Run`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from ..errors import ESNLensError
from ..registry import Registry


class StageError(ESNLensError, RuntimeError):
    """A stage broke its declaration (read an undeclared product, set one, or left a declared one unset), or the
    registered stages cannot be ordered."""


def _always(cfg: Any) -> bool:
    return True


@dataclass(frozen=True)
class Stage:
    """One registered stage: ``fn(run)`` runs when ``when(cfg)`` holds, after the producers of its ``needs`` and the
    stages named in ``after`` (and before those named in ``before``)."""

    name: str
    needs: tuple[str, ...]
    produces: tuple[str, ...]
    fn: Callable[[Any], None]
    when: Callable[[Any], bool] = _always
    after: tuple[str, ...] = field(default=())
    before: tuple[str, ...] = field(default=())


#: every registered stage, in registration order (built-ins register on ``import esn_lens.run``)
STAGE_REGISTRY: Registry[Stage] = Registry("stage")


def _names(x: str | Iterable[str] | None) -> tuple[str, ...]:
    if x is None:
        return ()
    return (x,) if isinstance(x, str) else tuple(x)


def register_stage(name: str, *, needs: Sequence[str] = (), produces: Sequence[str] = (),
                   when: Callable[[Any], bool] | None = None, after: str | Sequence[str] | None = None,
                   before: str | Sequence[str] | None = None, overwrite: bool = False):
    """Decorator registering ``fn(run)`` as the run stage ``name``.

    ``needs`` / ``produces``: product names (see :func:`product_names`); ``when(cfg) -> bool``: whether a run executes
    it (default always); ``after`` / ``before``: stage names it must follow / precede. A product has one producer:
    registering a second stage producing it raises :class:`StageError` (``overwrite=True`` replaces a stage of the
    same name). Example: ``register_stage("n_pool", needs=["pool_ids"], produces=["n_pool"], after="stats")(lambda run:
    setattr(run, "n_pool", len(run.pool_ids))); unregister_stage("n_pool")`` (or as a decorator, as in the README).
    """
    stage_kw = dict(needs=_names(needs), produces=_names(produces), after=_names(after), before=_names(before))

    def add(fn: Callable[[Any], None]) -> Callable[[Any], None]:
        if not callable(fn):
            raise StageError(f"stage {name!r}: expected a function fn(run), got {type(fn).__name__}")
        for p in stage_kw["produces"]:
            other = next((n for n, s in STAGE_REGISTRY.items() if p in s.produces and n != name), None)
            if other is not None:
                raise StageError(f"stage {name!r} produces {p!r}, which stage {other!r} already produces")
        STAGE_REGISTRY.register(name, Stage(name, fn=fn, when=when or _always, **stage_kw), overwrite=overwrite)
        return fn

    return add


def unregister_stage(name: str) -> Stage:
    """Remove a registered stage (e.g. a test's own) and return it."""
    return STAGE_REGISTRY.unregister(name)


def product_names() -> set[str]:
    """Every product name a registered stage needs or produces."""
    return {p for _, s in STAGE_REGISTRY.items() for p in (*s.needs, *s.produces)}


def stage_order() -> tuple[Stage, ...]:
    """The registered stages in execution order: each after the producers of its needs and its ``after`` stages
    (and before its ``before`` stages). Among stages free to run, a stage naming ``after`` comes right behind the
    last stage it names; the others in registration order (built-ins first)."""
    stages = [s for _, s in STAGE_REGISTRY.items()]
    by_name = {s.name: s for s in stages}
    producer = {p: s.name for s in stages for p in s.produces}
    deps: dict[str, set[str]] = {s.name: set() for s in stages}
    for s in stages:
        for n in s.needs:
            if n not in producer:
                raise StageError(f"stage {s.name!r} needs {n!r}, which no registered stage produces")
            if producer[n] != s.name:
                deps[s.name].add(producer[n])
        for a in s.after:
            if a not in by_name:
                raise StageError(f"stage {s.name!r} runs after {a!r}, which is not a registered stage")
            deps[s.name].add(a)
        for b in s.before:
            if b not in by_name:
                raise StageError(f"stage {s.name!r} runs before {b!r}, which is not a registered stage")
            deps[b].add(s.name)
    index = {s.name: i for i, s in enumerate(stages)}
    key: dict[str, float] = {}

    def rank(name: str, seen: tuple[str, ...] = ()) -> float:
        # registration order; a stage with ``after`` ranks right behind the last stage it names
        if name not in key:
            s = by_name[name]
            anchors = [a for a in s.after if a not in seen]
            key[name] = (max(rank(a, seen + (name,)) for a in anchors) + 0.5 + index[name] * 1e-6 if anchors
                         else float(index[name]))
        return key[name]

    order: list[Stage] = []
    placed: set[str] = set()
    while len(order) < len(stages):
        free = [s for s in stages if s.name not in placed and deps[s.name] <= placed]
        nxt = min(free, key=lambda s: rank(s.name)) if free else None
        if nxt is None:
            left = [s.name for s in stages if s.name not in placed]
            raise StageError(f"run stages {left} wait on each other (a cycle in needs/after/before)")
        order.append(nxt)
        placed.add(nxt.name)
    return tuple(order)


def stage_names() -> tuple[str, ...]:
    """Names of the registered stages in execution order."""
    return tuple(s.name for s in stage_order())


class StageContext:
    """What one stage sees: the run's products, checked against the stage's declaration, and the run itself.

    ``ctx.<product>`` reads a product (a declared need, or a declared product once set); ``ctx.<product> = value``
    sets a declared product; any other name is the run's (``cfg``, ``folder``, ``lens``, ``log``, ``par`` ...).
    """

    def __init__(self, run: Any, stage: Stage, products: dict[str, Any]):
        object.__setattr__(self, "_run", run)
        object.__setattr__(self, "_stage", stage)
        object.__setattr__(self, "_products", products)
        object.__setattr__(self, "_written", set())
        object.__setattr__(self, "_known", product_names())

    @property
    def stage(self) -> Stage:
        return self._stage

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        st = self._stage
        if name in self._known:
            if name in st.needs or name in self._written:
                return self._products.get(name)
            if name in st.produces:
                raise StageError(f"stage {st.name!r} reads its product {name!r} before setting it")
            raise StageError(f"stage {st.name!r} reads {name!r}, which it does not declare in needs="
                             f"{list(st.needs)}")
        return getattr(self._run, name)

    def __setattr__(self, name: str, value: Any) -> None:
        st = self._stage
        if name not in st.produces:
            raise StageError(f"stage {st.name!r} sets {name!r}, which it does not declare in produces="
                             f"{list(st.produces)}")
        self._products[name] = value
        self._written.add(name)

    def check_done(self) -> None:
        """Refuse a stage that returned without setting every product it declares."""
        missing = [p for p in self._stage.produces if p not in self._written]
        if missing:
            raise StageError(f"stage {self._stage.name!r} declares produces={list(self._stage.produces)} but did "
                             f"not set {missing}")


__all__ = ["Stage", "StageContext", "StageError", "STAGE_REGISTRY", "register_stage", "unregister_stage",
           "stage_order", "stage_names", "product_names"]
