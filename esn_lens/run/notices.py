"""Run warnings: one line on stderr (the ``esn_lens.run`` logger, shown even with ``--no-progress``) and a record in
the clip source (``clips.json``, ``results.json["clips"]["source"]["warnings"]``, and the report)."""
from __future__ import annotations

import logging
from typing import Any

from ..logs import ensure_handler

LOGGER = logging.getLogger("esn_lens.run")


def warn(source: dict[str, Any], message: str) -> None:
    """Say ``message`` on stderr and add it to ``source["warnings"]`` (once)."""
    ensure_handler()
    LOGGER.warning(f"warning: {message}")
    notes = source.setdefault("warnings", [])
    if message not in notes:
        notes.append(message)


__all__ = ["warn"]
