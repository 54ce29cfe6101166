"""Logging: esn_lens writes its stage lines to the ``esn_lens`` logger tree; the ``esn-lens`` command sets the level
(``--quiet``: warnings only, ``--verbose``: debug). With nothing configured, lines still reach stderr."""
from __future__ import annotations

import logging
import sys

ROOT = "esn_lens"


class StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is at the time (so redirected or captured stderr gets the lines)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            print(self.format(record), file=sys.stderr, flush=True)
        except Exception:  # noqa: BLE001 - logging must never break a run
            self.handleError(record)


def ensure_handler(level: int | None = None) -> logging.Logger:
    """The ``esn_lens`` logger with a stderr handler when none is configured (and ``level`` if given)."""
    root = logging.getLogger(ROOT)
    if not root.hasHandlers():
        handler = StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(handler)
        if root.level == logging.NOTSET:
            root.setLevel(logging.INFO)
    if level is not None:
        root.setLevel(level)
    return root


def configure(quiet: bool = False, verbose: bool = False) -> None:
    """The command line's logging: its own stderr handler on the ``esn_lens`` logger (not passed on to the root
    logger, so no line is printed twice) at warnings only with ``quiet``, debug with ``verbose``, else info."""
    root = logging.getLogger(ROOT)
    if not any(isinstance(h, StderrHandler) for h in root.handlers):
        handler = StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(handler)
    root.propagate = False
    root.setLevel(logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO)
