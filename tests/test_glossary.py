"""The glossary (issue #28) is where a reader looks -- README, the top of tutorial 01, docs/api.md -- and every
name the tutorials import from esn_lens is documented in docs/api.md."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TERMS = ["LAP", "LAPE", "MAD", "ConAct", "SE", "ACE", "ESS", "identification pool", "top_frac", "act"]
#: the formulas a reader needs (as written in the three places)
FORMULAS = ["K_e(n) / T_e", "P_(1)(n) - P_(2)(n)", "ESS = SE - ACE", "H[e, e]"]


def glossary_of(path: Path) -> str:
    text = path.read_text()
    if path.suffix == ".py":  # tutorial 01: its first markdown cell
        return text.split("# %%\n", 1)[0]
    m = re.search(r"## Glossary.*?\n(.*?)\n## ", text, flags=re.S)
    assert m, f"{path.name} has no Glossary section"
    return m.group(1)


@pytest.mark.parametrize("where", ["README.md", "docs/api.md", "tutorials/01_quickstart.py"])
def test_glossary_defines_every_term(where):
    g = glossary_of(ROOT / where)
    for term in TERMS:
        assert re.search(rf"\b{re.escape(term)}\b", g), f"{term!r} not defined in {where}'s glossary"
    assert "firing rate" in g and "budget" in g
    if where != "tutorials/01_quickstart.py":
        for f in FORMULAS:
            assert f in g, f"{f!r} not in {where}'s glossary"


def test_tutorial_names_documented():
    api = (ROOT / "docs/api.md").read_text()
    for f in sorted((ROOT / "tutorials").glob("*.py")):
        src = re.sub(r"#.*", "", f.read_text())
        names = set()
        for mod, body in re.findall(r"from (esn_lens[\w.]*) import (\([^)]*\)|[^\n]*)", src):
            names |= {n for n in re.split(r"[\s,()]+", body) if n.isidentifier() and n != "as"}
        missing = sorted(n for n in names if not re.search(rf"\b{n}\b", api))
        assert not missing, f"{f.name} uses {missing}, not in docs/api.md"
