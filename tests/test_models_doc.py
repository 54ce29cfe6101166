"""docs/models.md, ``esn-lens models`` and README's opening list agree with the adapter registry."""
from __future__ import annotations

from pathlib import Path

from esn_lens.adapters import ADAPTERS
from esn_lens.adapters.support import support_table, supported_titles
from esn_lens.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_models_doc_is_the_generated_table():
    doc = (ROOT / "docs" / "models.md").read_text()
    block = doc.split("<!-- support-table:start -->\n", 1)[1].split("\n<!-- support-table:end -->", 1)[0]
    assert block == support_table()
    for name in ADAPTERS.names():
        assert f"(`{name}`)" in block or f"`{name}`" in block


def test_esn_lens_models_prints_the_same_table(capsys):
    assert main(["models"]) == 0
    assert capsys.readouterr().out.strip() == support_table()


def test_readme_opening_names_every_family():
    opening = (ROOT / "README.md").read_text().split("\n\n", 2)
    head = "\n\n".join(opening[:2])
    missing = [t for t in supported_titles() if t not in head and t.split(" (")[0] not in head]
    assert not missing, missing
