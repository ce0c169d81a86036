"""Bad inputs and daily use (issue 16): details that do not depend on how a path was typed,
reports that go where they were asked, per-item failures that stay per item."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from conftest import REPO
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.core.errors import UserError
from pipeline.core.failures import batch_or_each, failure_detail
from pipeline.core.manifest import empty_class_folders, scan_image_folder


def test_outside_root_detail_is_the_same_for_a_relative_and_an_absolute_root(
    make_image_folder: Callable[..., Path], in_tmp: Path
) -> None:
    root = make_image_folder(classes=1, per_class=1, root=in_tmp / "raw")
    (in_tmp / "secret.jpg").write_bytes(b"z")
    (root / "class0" / "link.jpg").symlink_to(in_tmp / "secret.jpg")
    details = []
    for given in (Path("raw"), root.resolve()):
        _, (rejected,) = scan_image_folder(given)
        details.append(rejected.detail)
    assert details[0] == details[1] == "raw/class0/link.jpg resolves to secret.jpg, outside raw"


def test_empty_class_folders_are_found(tmp_path: Path) -> None:
    for folder in ("a/sub", "b", "c/.hidden", ".git"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "a" / "sub" / "x.jpg").write_bytes(b"x")
    (tmp_path / "c" / ".hidden" / "x.jpg").write_bytes(b"x")  # hidden folders are skipped
    assert empty_class_folders(tmp_path) == ["b", "c"]


def _doubles(items: Sequence[int]) -> list[int]:
    if 3 in items:
        raise ValueError("three is bad")
    return [2 * i for i in items]


def test_batch_or_each_isolates_the_failing_item() -> None:
    results = batch_or_each(_doubles, [1, 3, 5])
    assert results[0] == 2 and results[2] == 10
    assert isinstance(results[1], ValueError)
    assert failure_detail(results[1]) == "ValueError: three is bad"
    assert batch_or_each(_doubles, [1, 2]) == [2, 4]


def test_batch_or_each_lets_a_user_error_through() -> None:
    def missing_model(items: Sequence[int]) -> list[int]:
        raise UserError("no weights")

    with pytest.raises(UserError):
        batch_or_each(missing_model, [1, 2])


def test_a_report_elsewhere_writes_that_file_alone(
    make_image_folder: Callable[..., Path], in_tmp: Path
) -> None:
    """--report out/x.json wrote runtime figures to out/runtime/x.json, a folder nobody asked
    for; reports/<stage>.json (the pipeline's) keeps them in reports/runtime/."""
    raw = make_image_folder(classes=1, per_class=2, root=in_tmp / "raw")
    runner = CliRunner()
    args = ["augment", str(raw), "--factor", "2", "--recipe", "classic8", "--workers", "1"]
    result = runner.invoke(app, [*args, "--out", "aug1", "--report", "out/x.json"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (in_tmp / "out").iterdir()) == ["x.json"]
    result = runner.invoke(app, [*args, "--out", "aug2", "--report", "reports/augment.json"])
    assert result.exit_code == 0, result.output
    assert (in_tmp / "reports" / "runtime" / "augment.json").is_file()


def test_inside_a_project_errors_come_in_the_order_a_user_needs(
    make_image_folder: Callable[..., Path], in_tmp: Path
) -> None:
    """A missing folder, then bad params, and only then a DVC output written by hand."""
    shutil.copy(REPO / "dvc.yaml", in_tmp / "dvc.yaml")
    make_image_folder(classes=1, per_class=2, root=in_tmp / "data" / "raw")
    runner = CliRunner()
    result = runner.invoke(app, ["detect", "no/such/folder", "--out", "elsewhere"])
    assert result.exit_code == 2 and "no/such/folder does not exist" in result.output
    result = runner.invoke(
        app, ["augment", "data/raw", "-s", "factor=0", "--out", "data/augmented"]
    )
    assert result.exit_code == 2 and "augment.factor = 0" in result.output
    assert "DVC" not in result.output


def test_version_and_short_help() -> None:
    runner = CliRunner()
    version = runner.invoke(app, ["--version"])
    assert version.exit_code == 0 and version.output.startswith("prep (fewshot-prep) ")
    for args in (["-h"], ["split", "-h"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0 and "Usage: " in result.output, args  # (CliRunner: "root")


def test_a_dry_run_says_it_is_one_and_what_it_would_write(
    make_image_folder: Callable[..., Path], in_tmp: Path
) -> None:
    raw = make_image_folder(classes=1, per_class=2, root=in_tmp / "raw")
    (raw / "class0" / "broken.jpg").write_bytes(b"not a jpeg")
    args = ["augment", "raw", "--factor", "3", "--out", "aug", "--dry-run"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "augment (dry run): 3 in, 3 planned" in result.output
    assert "would write up to 9 images to aug/" in result.output and not Path("aug").exists()
