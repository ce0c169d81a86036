"""Each DVC stage depends on exactly the code it runs, and on its backend's params alone.

A stage's code deps in dvc.yaml are its module and every project module that one imports
(at run time, directly or through others): an edit anywhere else (the CLI, the contact
sheets, another stage) reruns nothing, and an edit there cannot be missed.
"""

from __future__ import annotations

import json

import pytest
import yaml
from dvc_project import copy_project, init_repo, mark_done, set_param, sh
from import_graph import REPO, closure

STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]


def code_deps(stage: str) -> set[str]:
    deps = [d if isinstance(d, str) else next(iter(d)) for d in STAGES[stage].get("deps", [])]
    return {d for d in deps if d.startswith(("pipeline/", "stages/"))}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_code_deps_are_exactly_what_the_stage_imports(stage: str) -> None:
    imported = {p.relative_to(REPO).as_posix() for p in closure(REPO / "stages" / f"{stage}.py")}
    declared = code_deps(stage)
    assert not imported - declared, f"add to {stage}'s deps: {sorted(imported - declared)}"
    assert not declared - imported, f"{stage} does not import: {sorted(declared - imported)}"


def test_no_stage_depends_on_the_cli_or_the_demo_data() -> None:
    assert all(not d.startswith(("pipeline/cli", "demo")) for s in STAGES for d in code_deps(s))


@pytest.mark.slow
def test_dvc_reruns_only_what_an_edit_touches(tmp_path) -> None:
    """The issue's checks, with DVC itself: a contact-sheet edit and a stargan param edit
    (with the warp backend) leave every stage up to date; a warp edit reruns generate."""
    root = copy_project(tmp_path / "project")
    init_repo(root)
    mark_done(root)
    assert "up to date" in sh("dvc", "status", cwd=root)
    sheet = root / "pipeline" / "cli" / "contact_sheet.py"
    sheet.write_text(sheet.read_text() + "\n# an edit to the contact sheet\n")
    assert "up to date" in sh("dvc", "status", cwd=root)
    set_param(root / "params.yaml", "generate.backends.stargan.size", 256)
    assert "up to date" in sh("dvc", "status", cwd=root)
    set_param(root / "params.yaml", "generate.backends.warp.strength", 1.5)
    assert set(json.loads(sh("dvc", "status", "--json", cwd=root))) == {"generate"}
