"""The house rules: no import cycles between esn_lens modules (module-level and deferred imports alike, outside
``TYPE_CHECKING``), and no module much over 400 lines."""
import ast
from pathlib import Path

import esn_lens

PKG = Path(esn_lens.__file__).parent
MAX_LINES = 420


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
