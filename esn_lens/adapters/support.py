"""The model-support table, generated from the adapter registry (docs/models.md and ``esn-lens models`` print it).

Each adapter class may carry ``support``: a dict with the keys of :data:`COLUMNS` after the first three (what its
MLP sites are, which positions are audio, how inputs are built, what was tested and how, known limits). A
user's adapter without it gets a row from its class attributes alone.
"""
from __future__ import annotations

from typing import Any

#: (column title, how the cell is read from an adapter class)
COLUMNS: tuple[tuple[str, str], ...] = (
    ("family", "name"), ("model class", "class_names"), ("decoder layers", "layers_path"),
    ("MLP sites", "mlp"), ("audio positions", "audio"), ("inputs built by", "inputs"),
    ("tested", "tested"), ("known limits", "limits"),
)


def support_rows() -> list[dict[str, str]]:
    """One row per registered adapter (registration order): column title -> cell text."""
    from .base import ADAPTERS

    rows = []
    for name in ADAPTERS.names():
        cls = ADAPTERS.get(name)
        info: dict[str, Any] = getattr(cls, "support", None) or {}
        row = {}
        for title, key in COLUMNS:
            if key == "name":
                row[title] = f"{info['title']} (`{name}`)" if info.get("title") else f"`{name}`"
            elif key == "class_names":
                row[title] = ", ".join(f"`{c}`" for c in cls.class_names) or "any (by layout)"
            elif key == "layers_path":
                row[title] = f"`{cls.layers_path}`"
            else:
                row[title] = str(info.get(key, "-"))
        rows.append(row)
    return rows


def supported_titles() -> list[str]:
    """The families' display names (``support["title"]``), e.g. ``"Kimi-Audio"`` (README's opening list names them)."""
    from .base import ADAPTERS

    return [t for t in ((getattr(ADAPTERS.get(n), "support", None) or {}).get("title") for n in ADAPTERS.names()) if t]


def support_table() -> str:
    """The support table as Markdown (the text between the markers in docs/models.md)."""
    titles = [t for t, _ in COLUMNS]
    lines = ["| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]
    for row in support_rows():
        lines.append("| " + " | ".join(row[t].replace("|", "\\|") for t in titles) + " |")
    return "\n".join(lines)
