"""The house rules over src/, read from the source (module- and function-level imports alike):
no import cycle, no private name imported across packages, and data flowing one way."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# Layers, lowest first: a module may import its own layer and those below, never one above.
LAYERS = [
    {"errors", "io", "config"},
    {"data"},
    {"model"},
    {"evaluate", "train", "cf"},  # cf: collaborative filtering scorers, built by evaluate's split scoring
    {"recommender", "retrieval"},
    {"serve", "experiment", "api"},
    {"cli", "__main__", "__init__"},
]


def _modules() -> dict[str, Path]:
    out = {}
    for p in (SRC / "mtnews").rglob("*.py"):
        parts = p.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


def _imports(path: Path, name: str) -> list[tuple[str, list[str]]]:
    """(imported module, names taken from it) for every import statement in the file, at any depth."""
    is_pkg = path.name == "__init__.py"
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names if a.name.startswith("mtnews")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base if is_pkg else base[:-1]
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.startswith("mtnews"):
                out.append((mod, [a.name for a in node.names]))
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, p in mods.items():
        for target, names in _imports(p, m):
            # `from mtnews.evaluate import predict` may name a submodule.
            subs = {f"{target}.{n}" for n in names if f"{target}.{n}" in mods}
            if subs:
                graph[m] |= subs
            if target in mods and (not subs or len(subs) < len(names)):
                graph[m].add(target)
    return graph


def _layer(module: str) -> int:
    top = module.split(".")[1] if module.count(".") else "__init__"
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"{module}: not in any layer of tests/test_architecture.py")


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if n == m or n == "mtnews":
                continue
            if state.get(n) == 1:
                cycles.append(stack[stack.index(n):] + [n])
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_no_private_names_across_packages():
    bad = []
    for m, p in _modules().items():
        package = m.rsplit(".", 1)[0] if p.name != "__init__.py" else m
        for target, names in _imports(p, m):
            target_package = target.rsplit(".", 1)[0] if target.count(".") > 1 else target
            for n in names:
                if n.startswith("_") and not n.startswith("__") and target_package != package:
                    bad.append(f"{m} imports {target}.{n}")
    assert not bad, bad


def test_data_flows_one_way():
    bad = [f"{m} -> {n}" for m, targets in _graph().items() for n in targets
           if n != "mtnews" and _layer(n) > _layer(m)]
    assert not bad, "imports from a higher layer: " + ", ".join(sorted(bad))


def test_the_walk_sees_function_level_imports():
    """Guards the test itself: evaluate.split_scoring imports model.run at module level, and the CLI
    modules import their libraries inside functions; both must be edges."""
    graph = _graph()
    assert "mtnews.model.run" in graph["mtnews.evaluate.split_scoring"]
    assert "mtnews.evaluate.split_scoring" in graph["mtnews.evaluate.commands"]
