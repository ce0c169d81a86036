"""Help that tells the truth (issue 16): placeholders survive the markup, and the values shown
are those a run from the working directory would use, even after DVC rewrote params.yaml."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from conftest import REPO
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.core.params import DEFAULTS_FILE, default_params_file, load_params

PLACEHOLDER = re.compile(r"<[\w.-]*>")


def _help_sources(command: Any) -> list[str]:
    """The help texts a command was declared with (before any markup)."""
    texts = [command.help or "", command.epilog or ""]
    texts += [getattr(param, "help", None) or "" for param in command.params]
    return [text.replace("\\<", "<").replace("\\>", ">") for text in texts]


def test_every_placeholder_in_help_is_shown() -> None:
    """Markdown took `<class>` for an HTML tag: "ImageFolder: raw//" (issue 16)."""
    group = typer.main.get_command(app)
    assert hasattr(group, "commands")
    runner = CliRunner()
    checked = set()
    for name, command in group.commands.items():
        wanted = {p for text in _help_sources(command) for p in PLACEHOLDER.findall(text)}
        wanted -= {"<bool>", "<int>", "<path>", "<str>"}  # typer's own type names
        if not wanted:
            continue
        output = runner.invoke(app, [name, "--help"], env={"COLUMNS": "300"}).output
        missing = {p for p in wanted if p not in output}
        assert not missing, (name, missing)
        checked |= {f"{name} {p}" for p in wanted}
    # the ones the issue found eaten, so that this test cannot pass by finding none
    assert {"detect <class>", "sample-data <out>", "generate <b>", "augment <folder>"} <= checked


def test_detect_help_lists_every_reason_it_can_give() -> None:
    output = CliRunner().invoke(app, ["detect", "--help"], env={"COLUMNS": "300"}).output
    reasons = "outside_root no_class unreadable too_large no_face low_prob multiple_faces"
    for reason in (*reasons.split(), "too_small", "truncated_face", "processing_failed"):
        assert reason in output, reason


def _prep_help(cwd: Path, command: str) -> str:
    """`prep COMMAND --help` in a new process: help is built at import, from the cwd."""
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", command, "--help"],
        cwd=cwd, capture_output=True, text=True, env={**os.environ, "COLUMNS": "300"}, check=True,
    )  # fmt: skip
    return done.stdout


def _shown(output: str, key: str) -> str:
    """The value the epilog table shows for ``key`` (columns are 2+ spaces apart)."""
    row = next(line for line in output.splitlines() if line.strip().startswith(f"{key} "))
    return re.split(r"\s{2,}", row.strip())[1]


def test_help_after_dvc_rewrote_params_yaml(tmp_path: Path) -> None:
    """DVC's `exp run -S` rewrites params.yaml (nulls blank, block lists, comments dropped);
    help showed "(a mapping)" for those keys. This uses DVC's own rewrite."""
    hydra = pytest.importorskip("dvc.utils.hydra")
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    hydra.apply_overrides(tmp_path / "params.yaml", ["train.lr=0.01"])
    rewritten = (tmp_path / "params.yaml").read_text()
    assert "  - 0.5\n" in rewritten and "weights: null" not in rewritten  # DVC did rewrite it
    output = _prep_help(tmp_path, "train")
    expected = {"weights": "null", "image_size": "null", "step_at": "[0.5, 0.75]",
                "data_mixup_beta": "[2.0, 1.0]", "lr": "0.01"}  # fmt: skip
    for key, value in expected.items():
        assert _shown(output, key) == value, key
    assert "(a mapping)" not in output
    assert "[params.yaml: 0.01]" in output  # --lr's help: the value this directory runs with


def test_help_shows_the_working_directorys_params_else_the_defaults(tmp_path: Path) -> None:
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    (project / "params.yaml").write_text("split:\n  val_per_class: 2\n")
    assert _shown(_prep_help(project, "split"), "val_per_class") == "2"
    here = _prep_help(elsewhere, "split")
    assert _shown(here, "val_per_class") == "1" and "[default: 1]" in here


def test_outside_a_project_a_run_uses_the_shipped_defaults(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checkout's params.yaml (an experiment may have left `recipe: classic8` there) is
    a project's file, never the defaults."""
    assert default_params_file() == DEFAULTS_FILE != REPO / "params.yaml"
    shipped = yaml.safe_load(DEFAULTS_FILE.read_text())
    assert load_params().augment.recipe == shipped["augment"]["recipe"]
    (in_tmp / "params.yaml").write_text("augment:\n  recipe: classic8\n")
    assert load_params().augment.recipe == "classic8"
    monkeypatch.chdir(in_tmp / "..")
    assert load_params().augment.recipe == shipped["augment"]["recipe"]


def _keys(data: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in data.items():
        keys.add(prefix + key)
        if isinstance(value, dict):
            keys |= _keys(value, f"{prefix}{key}.")
    return keys


def test_the_projects_params_yaml_holds_every_default_key() -> None:
    """DVC reads params.yaml alone (dvc.yaml `params:`), so the project's copy keeps every key
    of the defaults; a key added to one file must be added to the other."""
    shipped = _keys(yaml.safe_load(DEFAULTS_FILE.read_text()))
    project = _keys(yaml.safe_load((REPO / "params.yaml").read_text()))
    assert project == shipped, (
        f"only in pipeline/defaults.yaml: {sorted(set(shipped) - set(project))}; only in "
        f"params.yaml: {sorted(set(project) - set(shipped))}. Edit the defaults, then copy their "
        "body into params.yaml (`prep params --init` in an empty folder writes it)"
    )


def test_params_init_writes_the_full_defaults_once(in_tmp: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["params", "--init"]).exit_code == 0
    written = yaml.safe_load((in_tmp / "params.yaml").read_text())
    assert written == yaml.safe_load(DEFAULTS_FILE.read_text())
    assert "MTCNN face probability below this" in (in_tmp / "params.yaml").read_text()
    again = runner.invoke(app, ["params", "--init"])
    assert again.exit_code == 2 and "exists" in again.output


def test_under_dvc_every_value_must_come_from_params_yaml(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DVC tracks params.yaml alone: a key taken from the shipped defaults under `dvc repro`
    would change unseen with a new version, so the stage refuses to run."""
    monkeypatch.setenv("DVC_STAGE", "split")
    (in_tmp / "clean.csv").write_text("path,label,sha256\n")
    (in_tmp / "params.yaml").write_text("seed: 0\nsplit:\n  train_per_class: 3\n")
    result = CliRunner().invoke(app, ["split", "clean.csv", "--out", "s", "--report", "r.json"])
    assert result.exit_code == 2
    assert "lacks split.train_fraction, split.val_per_class, split.on_short_class" in result.output
    (in_tmp / "params.yaml").write_text(
        "seed: 0\nsplit:\n  train_per_class: 3\n  train_fraction:\n  val_per_class: 1\n"
        "  on_short_class: error\n"
    )
    result = CliRunner().invoke(app, ["split", "clean.csv", "--out", "s", "--report", "r.json"])
    assert "lacks" not in result.output and "nothing to do" in result.output  # on to the stage
