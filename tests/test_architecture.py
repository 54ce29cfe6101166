"""The house rules: no import cycles between esn_lens modules (module-level and deferred imports alike, outside
``TYPE_CHECKING``), and no module over 405 lines."""
import ast
from pathlib import Path

import esn_lens

PKG = Path(esn_lens.__file__).parent
MAX_LINES = 405


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """esn_lens modules imported anywhere in the file except under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text())
    is_pkg = path.name == "__init__.py"
    base = name if is_pkg else name.rsplit(".", 1)[0]
    out: set[str] = set()

    def visit(node, typing_only=False):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("esn_lens"):
                    out.add(a.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                pkg = base.split(".")
                pkg = pkg[: len(pkg) - node.level + 1]
                mod = ".".join(pkg + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.startswith("esn_lens"):
                for a in node.names:  # `from . import x` imports the submodule x
                    sub = f"{mod}.{a.name}"
                    out.add(sub if sub in known else mod)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {m for m in out if m in known and m != name}


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PKG.rglob("*.py")}
    known = set(files)
    g = {}
    for name, path in files.items():
        deps = imports_of(path, name, known)
        # importing a submodule runs its parents' __init__ first; a package importing its own children is fine
        g[name] = {d for d in deps if not d.startswith(name + ".") or True}
    return g


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(g.get(n, ())):
            if m.startswith(n + "."):  # a package and its own submodules
                continue
            if n.startswith(m + ".") and m in g and PKG.joinpath(*m.split(".")[1:], "__init__.py").exists():
                continue  # a submodule importing its package's __init__ (re-exports)
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                c = dfs(m)
                if c:
                    return c
        state[n] = 2
        stack.pop()
        return None

    for n in sorted(g):
        if n not in state:
            c = dfs(n)
            if c:
                return c
    return None


def test_no_import_cycles():
    cycle = find_cycle(graph())
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"esn_lens.a": {"esn_lens.b"}, "esn_lens.b": {"esn_lens.c"}, "esn_lens.c": {"esn_lens.a"}}) == [
        "esn_lens.a", "esn_lens.b", "esn_lens.c", "esn_lens.a"]
    assert find_cycle({"esn_lens.a": {"esn_lens.b"}, "esn_lens.b": set()}) is None


def test_no_module_is_a_room_with_many_jobs():
    long = {module_name(p): n for p in PKG.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def all_imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """esn_lens modules a file imports anywhere, ``if TYPE_CHECKING:`` blocks included."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
            pkg = base.split(".")
            pkg = pkg[: len(pkg) - node.level + 1]
            mod = ".".join(pkg + ([node.module] if node.module else []))
            for a in node.names:
                sub = f"{mod}.{a.name}"
                out.add(sub if sub in known else mod)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("esn_lens"):
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("esn_lens")}
    return {m for m in out if m in known and m != name}


def test_nothing_below_the_facade_refers_to_it():
    """The modules lens.py is built on (its import closure) never import lens.py, not even for typing."""
    files = {module_name(p): p for p in PKG.rglob("*.py")}
    known = set(files)
    # the closure of lens.py's imports (module-level and deferred)
    below, todo = set(), [m for m in all_imports_of(files["esn_lens.lens"], "esn_lens.lens", known)]
    while todo:
        m = todo.pop()
        if m in below or m == "esn_lens.lens" or m == "esn_lens":
            continue
        below.add(m)
        todo += list(all_imports_of(files[m], m, known))
    assert {"esn_lens.tracing", "esn_lens.sites", "esn_lens.interventions", "esn_lens.stats"} <= below
    offenders = sorted(m for m in below if "esn_lens.lens" in all_imports_of(files[m], m, known))
    assert not offenders, f"modules below lens.py that import it: {offenders}"


def test_no_private_field_of_the_facade_is_used_outside_it():
    import re

    pat = re.compile(r"\blens\._[a-z]|\._layout\b|\._hooks\b|_pad_token_id\b")
    hits = [f"{p.relative_to(PKG.parent)}:{i}" for p in PKG.rglob("*.py") if p.name != "lens.py" or p.parent != PKG
            for i, line in enumerate(p.read_text().splitlines(), 1) if pat.search(line)]
    assert not hits, hits


def test_operations_produce_hooks_without_the_tracer():
    """interventions.py, stats.py and recorders.py import nothing from tracing.py: the trace attaches their hooks."""
    files = {module_name(p): p for p in PKG.rglob("*.py")}
    for m in ("esn_lens.interventions", "esn_lens.stats", "esn_lens.recorders"):
        assert "esn_lens.tracing" not in all_imports_of(files[m], m, set(files)), m
