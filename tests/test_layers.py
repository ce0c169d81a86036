"""The architecture as a check: each layer imports only from the layers below it.

core < components < stages < demo < cli. Stages never import each other: they meet only
through files. Every import counts, those inside functions too.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from import_graph import LAYERS, PACKAGES, REPO, imported_modules, module_file, module_name


def layer_of(module: str) -> int | None:
    """The layer index of a project module, None for anything outside the project."""
    for index, prefix in reversed(list(enumerate(LAYERS))):
        if module == prefix or module.startswith(prefix + "."):
            return index
    return None


def violations(module: str, source: str) -> list[str]:
    """Imports of ``module`` that reach up a layer, or from one stage into another."""
    own = layer_of(module)
    problems = []
    for target in sorted(imported_modules(source)):
        layer = layer_of(target)
        if own is None or layer is None:
            continue
        if layer > own:
            problems.append(f"{module} imports {target} ({LAYERS[layer]} is above {LAYERS[own]})")
        elif LAYERS[own] == "stages" == LAYERS[layer] and target != module:
            problems.append(f"{module} imports {target}: stages meet only through files")
    return problems


def project_modules() -> list[Path]:
    """Every module of the layered packages (their bare ``__init__`` files excluded)."""
    roots = [REPO / "pipeline", REPO / "stages", REPO / "demo"]
    return sorted(p for root in roots for p in root.rglob("*.py") if module_name(p) not in PACKAGES)


def test_no_module_imports_upward_or_across_stages() -> None:
    problems = [
        problem
        for path in project_modules()
        for problem in violations(module_name(path), path.read_text(encoding="utf-8"))
    ]
    assert problems == []


def test_every_project_module_has_a_layer() -> None:
    assert all(layer_of(module_name(path)) is not None for path in project_modules())


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("pipeline.core.files", "from pipeline.components import embedders\n", 1),
        ("pipeline.components.recipes", "def f():\n    from stages import augment\n", 1),
        ("stages.clean", "from stages.split import run\n", 1),
        ("stages.clean", "import pipeline.cli.app\n", 1),
        ("pipeline.cli.app", "from stages import detect\nfrom pipeline.core import files\n", 0),
        ("stages.split", "from pipeline.core.manifest import read_manifest\n", 0),
    ],
)
def test_the_check_catches_an_upward_import(module: str, source: str, expected: int) -> None:
    """The check above has teeth: a planted upward or cross-stage import is reported."""
    assert len(violations(module, source)) == expected


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import circle of ``graph`` (module -> modules it imports), once each: the strongly
    connected components with more than one module, found by Tarjan's algorithm."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            members = []
            while not members or members[-1] != node:
                members.append(stack.pop())
            if len(members) > 1:
                cycles.append(sorted(members))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def project_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (lazy imports inside functions too)."""
    graph: dict[str, set[str]] = {}
    for path in project_modules():
        imported = imported_modules(path.read_text(encoding="utf-8"))
        graph[module_name(path)] = {m for m in imported if module_file(m) is not None}
    return graph


def test_no_import_circles() -> None:
    """A circle (a -> b -> a, even through a lazy import) means shared pieces belong in a module
    below both: e.g. dlib's face-model files in components.face_models."""
    assert import_cycles(project_graph()) == []


def test_the_circle_check_finds_a_planted_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert import_cycles(graph) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []
