"""The package's layout: the five concepts at the top, short files, and an import graph without
cycles. `python tests/test_layout.py` prints the modules by level (each imports only earlier levels)."""

import ast
from graphlib import TopologicalSorter
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "alol_min"
CONCEPTS = ("rewards", "values", "advantage", "importance", "losses")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports at module level."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py") if "metrics" not in p.parts}
    graph = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.parse(path.read_text()).body:
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.startswith("alol_min")
            ):
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    deps.add(full if full in modules else node.module)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name in modules)
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def test_the_import_graph_has_no_cycle():
    order = list(TopologicalSorter(import_graph()).static_order())  # raises CycleError on a cycle
    for earlier, later in [
        ("alol_min.lm.models", "alol_min.rewards"),
        ("alol_min.losses", "alol_min.run.train"),
        ("alol_min.run.train", "alol_min.run.reproduce"),
        ("alol_min.run.plots", "alol_min.cli"),
    ]:
        assert order.index(earlier) < order.index(later), (earlier, later)


def test_the_concepts_sit_at_the_top_and_files_stay_short():
    top = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert set(CONCEPTS) <= set(top) and len(top) <= 12, top
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 450
    }
    assert not long, long


def test_the_concepts_do_not_import_the_pipeline():
    graph = import_graph()
    for concept in CONCEPTS:
        assert not {
            d
            for d in graph[f"alol_min.{concept}"]
            if d.startswith(("alol_min.run", "alol_min.cli"))
        }


if __name__ == "__main__":  # the modules by level: each imports only modules of earlier levels
    graph, level = import_graph(), {}
    for name in TopologicalSorter(graph).static_order():
        level[name] = 1 + max((level[d] for d in graph[name]), default=-1)
    for depth in range(max(level.values()) + 1):
        print(
            depth,
            " ".join(sorted(n.removeprefix("alol_min.") for n, k in level.items() if k == depth)),
        )
