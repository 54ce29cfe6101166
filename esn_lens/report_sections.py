"""The report's open end: sections registered by plugins, and the sentence naming the run's intervention.

A report section is ``fn(results, run_dir) -> list[Block] | None`` registered in :data:`REPORT_SECTIONS`; the
report adds each registered section's blocks (in registration order) before its closing "Run" section, so a
plugin's own products (files its stage wrote into the run folder, or fields of ``results``) are shown without
touching ``report.py``::

    from esn_lens.report import Block, REPORT_SECTIONS

    @REPORT_SECTIONS.register("my_metric")
    def my_metric(results, run_dir):
        value = json.loads((run_dir / "my_metric.json").read_text())["value"]
        return [Block("h2", "My metric"), Block("p", f"value {value:.3f}")]

A section that raises is reported in its place as one line naming it (the rest of the report is still written).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .registry import Registry

__all__ = ["REPORT_SECTIONS", "Block", "section_blocks", "describe_intervention"]


@dataclass
class Block:
    """One piece of the report: ``kind`` h1 h2 h3 p table img list code; ``content`` its text (a table:
    ``(header, rows)``, a list: its items, an image: its path relative to the run folder); ``extra`` an image's alt."""

    kind: str
    content: Any
    extra: Any = None

#: name -> fn(results: dict, run_dir: Path) -> list[Block] | None
REPORT_SECTIONS: Registry[Callable[[dict, Path], Any]] = Registry("report section")

_WHAT = {"deactivate": "set to 0", "mean_ablate": "set to their mean over the pool's counted tokens"}


def describe_intervention(cfg: dict[str, Any]) -> str:
    """What the deactivation stage did to each emotion's neurons, e.g. ``"set to 0"`` or
    ``"edited by the intervention `clamp` (limit=0.5)"``."""
    name = cfg.get("intervention") or "deactivate"
    opts = (cfg.get("intervention_options") or {}).get(name) or {}
    text = _WHAT.get(name, f"edited by the intervention `{name}`")
    if opts:
        text += " (" + ", ".join(f"{k}={v}" for k, v in opts.items()) + ")"
    return text


def section_blocks(results: dict[str, Any], run_dir: Path) -> list:
    """The blocks of every registered section (a failing section becomes one paragraph naming it)."""
    out: list = []
    for name, fn in REPORT_SECTIONS.items():
        try:
            blocks = fn(results, Path(run_dir)) or []
        except Exception as e:  # noqa: BLE001 -- a plugin's section must not cost the whole report
            blocks = [Block("p", f"Report section {name!r} ({getattr(fn, '__module__', '?')}) failed: "
                                 f"{type(e).__name__}: {e}")]
        out.extend(blocks)
    return out
