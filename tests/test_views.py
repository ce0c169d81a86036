"""What `prep show` and `prep summary` say (issue 16): every stage's rejects, train and
evaluate rows with their accuracy, columns that name their section."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from pipeline.cli import app, experiments
from pipeline.core.manifest import write_manifest


def test_show_rejects_draws_every_stages_rejects(in_tmp: Path) -> None:
    for name in ("a.jpg", "b.jpg"):
        Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(in_tmp / name)
    write_manifest(Path("data/faces/rejects.csv"), [
        {"path": "a.jpg", "label": "x", "stage": "detect", "reason": "no_face", "detail": "d"},
        {"path": "/etc/hostname", "label": "x", "stage": "scan", "reason": "outside_root",
         "detail": "a link out"},
    ])  # fmt: skip
    write_manifest(Path("data/augmented/rejects.csv"), [
        {"path": "b.jpg", "label": "x", "stage": "augment", "reason": "too_small", "detail": "d"},
    ])  # fmt: skip
    result = CliRunner().invoke(app, ["show", "--rejects"])
    assert result.exit_code == 0, result.output
    assert "no_face 1, outside_root 1, too_small 1" in result.output
    assert Path("reports/rejects_sheet.png").is_file()


def test_summary_has_train_and_evaluate_rows(in_tmp: Path) -> None:
    reports = {"detect": {"in": 10, "kept": 9, "rejected": 1, "rejected_by_reason": {"a": 1}}}
    for stage, data in reports.items():
        Path("reports").mkdir(exist_ok=True)
        Path(f"reports/{stage}.json").write_text(json.dumps(data))
    Path("dvclive").mkdir()
    Path("dvclive/metrics.json").write_text(json.dumps({"n_train": 24, "best_val_acc": 0.75}))
    Path("metrics").mkdir()
    Path("metrics/test.json").write_text(json.dumps({"accuracy": 0.8125, "n_test": 16}))
    output = CliRunner().invoke(app, ["summary"]).output
    assert "train      images 24, best val acc 75.0%" in output
    assert "evaluate   test images 16, accuracy 81.2%" in output


def test_summary_shows_the_baseline_accuracies(in_tmp: Path) -> None:
    """`make demo` ends with `prep summary` instead of a 330-column `dvc metrics show`: the
    baseline's two accuracies (nested keys) are in it, each line fits a terminal."""
    Path("reports").mkdir()
    baseline = {"in": 12, "kept": 12, "rejected": 0, "n_test": 6,
                "nearest_centre": {"accuracy": 0.5, "macro_f1": 0.4},
                "logistic_regression": {"accuracy": 0.8333, "macro_f1": 0.8}}  # fmt: skip
    Path("reports/baseline.json").write_text(json.dumps(baseline))
    output = CliRunner().invoke(app, ["summary"]).output
    assert "baseline   nearest-centre acc 50.0%, logistic acc 83.3%" in output
    assert max(len(line) for line in output.splitlines()) <= 100


def test_experiment_columns_keep_the_section_of_a_generic_key() -> None:
    names = ["generate.enabled", "augment.factor", "train.device"]
    assert experiments.short_names(names) == ["generate.enabled", "factor", "train.device"]
