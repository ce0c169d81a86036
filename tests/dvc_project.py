"""A throwaway copy of the project as a git + DVC repository, for tests of the DVC wiring."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # where `prep` and `dvc` of this environment live


def sh(*args: str, cwd: Path) -> str:
    """Run a command in ``cwd``; its stdout, or a failure showing both streams."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def set_params(path: Path, changes: dict[str, dict[str, object]]) -> None:
    """Update sections of a params.yaml in place, e.g. {"augment": {"factor": 3}}."""
    params = yaml.safe_load(path.read_text())
    for section, values in changes.items():
        params[section].update(values)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def copy_project(root: Path, changes: dict[str, dict[str, object]] | None = None) -> Path:
    """dvc.yaml, params.yaml (with ``changes``) and the code the stages depend on."""
    root.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", "params.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(REPO / name, root / name)
    for package in ("pipeline", "stages"):
        shutil.copytree(REPO / package, root / package, ignore=shutil.ignore_patterns("__py*"))
    set_params(root / "params.yaml", changes or {})
    return root


def init_repo(root: Path) -> None:
    """git + DVC initialised and everything present committed (dvclive needs a commit)."""
    sh("git", "init", "-q", cwd=root)
    sh("dvc", "init", "-q", cwd=root)
    sh("git", "add", "-A", cwd=root)
    sh("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init", cwd=root)


def set_param(path: Path, dotted: str, value: object) -> None:
    """Set one (possibly nested) key of a params.yaml: ``generate.backends.warp.strength``."""
    params = yaml.safe_load(path.read_text())
    *parents, leaf = dotted.split(".")
    node = params
    for key in parents:
        node = node[key]
    node[leaf] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def mark_done(root: Path, stages: list[str] | None = None) -> None:
    """Record ``stages`` (default: all) as done on stand-in outputs, without running them.

    DVC then judges only what changes afterwards: code, params or data of a stage.
    """
    declared = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    for name in stages or list(declared):
        for entry in declared[name].get("deps", []) + declared[name].get("outs", []):
            path = root / (entry if isinstance(entry, str) else next(iter(entry)))
            if path.exists():
                continue
            if path.suffix:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("{}\n")
            else:
                path.mkdir(parents=True)
    sh("dvc", "commit", "-f", "-q", *(stages or list(declared)), cwd=root)
