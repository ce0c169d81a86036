"""The project's import graph, read from the sources (every import counts, those in
functions too): which modules a module reaches, as files."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("pipeline.core", "pipeline.components", "stages", "demo", "pipeline.cli")
PACKAGES = {"pipeline", *LAYERS}  # `from <package> import <module>` names the module


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_file(module: str) -> Path | None:
    """The file that defines ``module`` in the project, or None (a library, or no such)."""
    base = REPO.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(source: str, run_only: bool = False) -> set[str]:
    """Every module an import statement names, at any depth of the file.

    ``run_only``: leave out imports under ``if TYPE_CHECKING:``, which never run.
    """
    found: set[str] = set()
    tree = ast.parse(source)
    skipped = {id(n) for block in _type_checking_blocks(tree) for n in ast.walk(block)}
    for node in ast.walk(tree):
        if run_only and id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = {f"{node.module}.{alias.name}" for alias in node.names}
            found.update(names if node.module in PACKAGES else {node.module})
            found.update(n for n in names if module_file(n))  # `from pkg import submodule`
    return found


def _type_checking_blocks(tree: ast.AST) -> list[ast.If]:
    return [
        node for node in ast.walk(tree)
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING"
    ]  # fmt: skip


def closure(path: Path) -> set[Path]:
    """``path`` and every project file it runs an import of, directly or through others."""
    seen: set[Path] = set()
    todo = [path]
    while todo:
        file = todo.pop()
        if file in seen:
            continue
        seen.add(file)
        name = module_name(file)
        parents = [".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)]
        source = file.read_text(encoding="utf-8")
        for module in [*imported_modules(source, run_only=True), *parents]:
            target = module_file(module)
            if target is not None and target not in seen:
                todo.append(target)
    return seen


def write_dvc_deps(dvc_yaml: Path = REPO / "dvc.yaml") -> None:
    """Rewrite each stage's code deps in dvc.yaml (the lines under ``pipeline/`` and ``stages/``)
    as its import closure, leaving every other line as it is."""
    lines = dvc_yaml.read_text(encoding="utf-8").splitlines(keepends=True)
    out: list[str] = []
    stage = ""
    i = 0
    while i < len(lines):
        if match := re.match(r"^  (\w+):", lines[i]):
            stage = match.group(1)
        if re.match(r"^      - (pipeline|stages)/", lines[i]):
            while i < len(lines) and re.match(r"^      - (pipeline|stages)/", lines[i]):
                i += 1
            files = sorted(p.relative_to(REPO).as_posix() for p in closure(stage_file(stage)))
            out += [f"      - {f}\n" for f in files]
            continue
        out.append(lines[i])
        i += 1
    dvc_yaml.write_text("".join(out), encoding="utf-8")


def stage_file(stage: str) -> Path:
    return REPO / "stages" / f"{stage}.py"


if __name__ == "__main__":  # `python tests/import_graph.py`: after moving code between modules
    write_dvc_deps()
