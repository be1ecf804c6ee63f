"""The package layering of docs/ARCHITECTURE.md, checked on the source: no import cycles (imports inside functions
included), ``operators`` and ``priors`` never import ``restore``, solvers never import ``priors``."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("restore", "priors", "operators")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = path
    return out


def _imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Module → the modules of these packages it imports anywhere (top level or inside functions)."""
    graph = {m: set() for m in mods}
    for m, path in mods.items():
        package = m if path.name == "__init__.py" else m.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[:len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in mods]
                found = subs or [target]
            elif isinstance(node, ast.Import):
                found = [a.name for a in node.names]
            else:
                continue
            for name in found:
                while name and name not in mods:  # import a.b.c of a package: its deepest known module
                    name = name.rpartition(".")[0]
                if name and name != m:
                    graph[m].add(name)
    return graph


def _cycle_from(start: str, graph: dict[str, set[str]]) -> list[str] | None:
    stack, seen = [(start, [start])], set()
    while stack:
        node, path = stack.pop()
        for nxt in sorted(graph[node]):
            if nxt == start:
                return path + [start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, path + [nxt]))
    return None


def test_no_import_cycles():
    graph = _imports(_modules())
    cycles = sorted({tuple(c) for m in graph if (c := _cycle_from(m, graph))})
    assert not cycles, f"import cycles: {cycles[:5]}"


def test_the_cycle_check_finds_a_lazy_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycle_from("a", graph) == ["a", "b", "c", "a"] and _cycle_from("d", graph) is None


def test_layers():
    graph = _imports(_modules())
    for m, targets in graph.items():
        if m.startswith(("operators", "priors")):
            assert not any(t.startswith("restore") for t in targets), f"{m} imports restore"
        if m.startswith("restore.solvers"):
            assert not any(t.startswith("priors") for t in targets), f"{m} imports priors"
