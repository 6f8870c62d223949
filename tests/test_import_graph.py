"""The package's import graph: no circles, and each module imports only from its own layer or
the layers below (DESIGN.md, Layout). Read from the source with `ast`, nothing imported."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parent.parent
LAYERS = {  # DESIGN.md: lowest first
    "records": 1, "config": 1, "league": 1, "trainer_settings": 1, "answers": 1, "hooks": 1, "errors": 1, "seeds": 1, "symbols": 1,
    "graph": 2, "models": 2, "contain": 2, "task_sources": 2, "token_scoring": 2, "move_policy": 2,
    "scenario": 3, "rewards": 3, "registry": 3, "adapters": 3,
    "env": 4, "games": 4, "backends": 4,
    "team": 5, "rollout": 5, "analysis": 5,
    "trainers": 6,
    "cli": 7, "serve": 7, "launch": 7,  # serve.py: the `serve` command; launch.py: `train --processes N`
}
# Imports inside a function that go up a layer on purpose, each with its reason.
UPWARD_ON_USE = {
    ("multiagent_rl.scenario", "multiagent_rl.env"): "Scenario.make_env(seed=...) is public API",
}


def modules() -> dict[str, Path]:
    found = {}
    for path in [*ROOT.glob("multiagent_rl/**/*.py"), *ROOT.glob("trainers/**/*.py")]:
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> tuple[set[str], set[str]]:
    """(modules imported at module level, modules imported inside functions); imports under
    `if TYPE_CHECKING:` never run and are left out."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def targets(node: ast.Import | ast.ImportFrom) -> set[str]:
        if isinstance(node, ast.Import):
            return {a.name for a in node.names} & set(known)
        base = node.module or ""
        if node.level:
            parts = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join([*parts, *([node.module] if node.module else [])])
        return {f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names} & set(known)

    top: set[str] = set()
    lazy: set[str] = set()

    def visit(nodes) -> None:
        for node in nodes:
            if isinstance(node, ast.Import | ast.ImportFrom):
                top.update(targets(node))
            elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                lazy.update(t for n in ast.walk(node) if isinstance(n, ast.Import | ast.ImportFrom) for t in targets(n))
            else:
                visit(ast.iter_child_nodes(node))

    visit(ast.parse(path.read_text()).body)
    return top - {name}, lazy - top - {name}


def layer(module: str) -> int | None:
    """A module's layer (a package's modules share its layer); None: not in DESIGN.md's list."""
    parts = module.split(".")
    if parts == ["multiagent_rl"]:  # the public API: what scenario, rewards and registry give
        return LAYERS["registry"]
    return LAYERS.get(parts[0] if parts[0] == "trainers" else parts[1])


def graph(with_lazy: bool) -> nx.DiGraph:
    known = modules()
    g = nx.DiGraph()
    for name, path in known.items():
        top, lazy = imports(name, path, known)
        g.add_edges_from((name, t) for t in top | (lazy if with_lazy else set()) if (name, t) not in UPWARD_ON_USE)
    return g


def test_no_import_circles():
    for with_lazy in (False, True):
        cycles = list(nx.simple_cycles(graph(with_lazy)))
        assert not cycles, f"import circles ({'with' if with_lazy else 'without'} imports on use): {cycles}"


def test_each_module_imports_only_from_its_layer_or_below():
    g = graph(with_lazy=True)
    upward = [(a, b) for a, b in g.edges if layer(a) is not None and layer(b) is not None and layer(b) > layer(a)]
    assert not upward, f"imports from a layer above (DESIGN.md, Layout): {upward}"
    for name in ("multiagent_rl.errors", "multiagent_rl.scenario", "multiagent_rl.rewards", "multiagent_rl.registry"):
        assert layer(name) is not None and name in g
