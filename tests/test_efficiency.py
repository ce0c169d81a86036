from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from pipeline.cli import experiments
from pipeline.cli.efficiency import (
    Run,
    aggregate,
    exp_show_rows,
    fit_log,
    fits,
    group_label,
    runs_from_exp_show,
    write_report,
)


def test_log_fit_recovers_the_original_curve() -> None:
    fractions = [10, 20, 30, 40, 50, 60, 70, 80, 90]
    accuracy = [21.3 * math.log(x) - 10.8 for x in fractions]
    fit = fit_log(fractions, accuracy)
    assert fit is not None
    assert fit.a == pytest.approx(21.3) and fit.b == pytest.approx(-10.8)
    assert fit.r2 == pytest.approx(1.0)


def test_log_fit_r2_drops_with_noise_and_needs_two_x() -> None:
    fit = fit_log([1, 2, 3, 4, 5], [10, 40, 20, 50, 30])
    assert fit is not None and 0.0 <= fit.r2 < 0.6
    assert fit_log([3, 3], [10, 20]) is None
    flat = fit_log([1, 2], [50, 50])
    assert flat is not None and flat.a == 0 and flat.r2 is None


def _node(name: str, per_class: int, factor: int, seed: int, acc: float | None) -> dict[str, Any]:
    params = {
        "seed": seed,
        "split": {"train_per_class": per_class, "train_fraction": None},
        "augment": {"factor": factor, "recipe": "medium"},
        "train": {"source": "augmented"},
    }
    metrics = {} if acc is None else {"metrics/test.json": {"data": {"accuracy": acc}}}
    return {"rev": name * 5, "name": name, "error": None, "experiments": None,
            "data": {"params": {"params.yaml": {"data": params}}, "metrics": metrics}}  # fmt: skip


def _exp_show() -> list[dict[str, Any]]:
    """The shape of `dvc exp show --json` (DVC 3): workspace, baseline commit, experiments."""
    revs = [
        _node(f"e{x}{f}{s}", x, f, s, acc=(0.2 * x + 0.05 * (f == 8) + 0.01 * s) / 1.2)
        for x in (1, 2, 4) for f in (1, 8) for s in (0, 1)
    ]  # fmt: skip
    revs.append(_node("queued", 3, 8, 0, acc=None))  # no metrics yet: skipped
    baseline = _node("main", 3, 8, 0, acc=0.5)
    baseline["experiments"] = [{"revs": revs, "executor": None, "name": None}]
    return [{**_node("workspace", 3, 8, 0, acc=0.5), "rev": "workspace"}, baseline]


def test_runs_are_read_from_exp_show_json() -> None:
    runs = runs_from_exp_show(_exp_show())
    assert len(runs) == 12  # experiments only: commit, workspace and the queued one are left out
    assert runs[0].params["split.train_per_class"] == 1
    assert runs[0].metrics["metrics/test.json:accuracy"] == pytest.approx(0.2 / 1.2)
    assert len(runs_from_exp_show(_exp_show(), include_commits=True)) == 13


def test_aggregate_pools_seeds_per_setting_and_x() -> None:
    cells, label = aggregate(runs_from_exp_show(_exp_show()))
    assert label == "images per class"
    assert {c.group for c in cells} == {"no augmentation", "factor 8, recipe medium"}
    cell = next(c for c in cells if c.group == "no augmentation" and c.x == 2)
    assert len(cell.values) == 2
    assert cell.mean == pytest.approx(100 * (0.4 + 0.005) / 1.2)
    assert cell.std == pytest.approx(100 * 0.01 / 1.2 / math.sqrt(2))


def test_train_fraction_is_the_x_axis_when_no_run_sets_a_count() -> None:
    run = Run("r", {"split.train_per_class": None, "split.train_fraction": 0.3}, {"m:acc": 0.5})
    cells, label = aggregate([run], metric="m:acc")
    assert label.startswith("train fraction") and cells[0].x == pytest.approx(30.0)


def test_group_label_names_the_augmentation_setting() -> None:
    assert group_label({"augment.factor": 1, "augment.recipe": "medium"}, ["augment.factor"]) == (
        "no augmentation"
    )
    assert group_label({"augment.factor": 8, "train.source": "split"}, []) == "no augmentation"
    groups = ["augment.factor", "augment.recipe"]
    assert group_label({"augment.factor": 8, "augment.recipe": "heavy"}, groups) == (
        "factor 8, recipe heavy"
    )
    more = [*groups, "train.epochs"]
    assert group_label({"augment.factor": 1, "train.epochs": 200}, more) == (
        "no augmentation, train.epochs 200"
    )


def test_runs_that_differ_in_any_param_are_not_pooled() -> None:
    """generate.enabled false and true were merged into one line (issue 16)."""
    runs = [
        Run(f"r{x}{on}{s}", {"seed": s, "split.train_per_class": x, "augment.factor": 8,
                             "augment.recipe": "medium", "generate.enabled": on},
            {"m:acc": 0.1 * x + 0.05 * on + 0.01 * s})
        for x in (1, 2) for on in (False, True) for s in (0, 1)
    ]  # fmt: skip
    cells, _ = aggregate(runs, metric="m:acc")
    assert {c.group for c in cells} == {
        "factor 8, recipe medium, generate.enabled False",
        "factor 8, recipe medium, generate.enabled True",
    }
    assert all(len(c.values) == 2 for c in cells)  # the seeds, and only they, are pooled
    pooled, _ = aggregate(runs, metric="m:acc", group_by=["augment.factor"])  # told otherwise
    assert {c.group for c in pooled} == {"factor 8"} and len(pooled[0].values) == 4


def test_report_writes_table_fit_and_plot(tmp_path: Path) -> None:
    runs = runs_from_exp_show(_exp_show())
    text = write_report(runs, tmp_path / "efficiency")
    assert "| no augmentation | 4 | 2 |" in text
    assert text.count("R^2 =") == 2
    assert (tmp_path / "efficiency.csv").read_text().count("\n") == 1 + 6
    with Image.open(tmp_path / "efficiency.png") as image:
        assert image.size == (760, 480)
    assert fits(aggregate(runs)[0])["no augmentation"] is not None


# --- prep summary --experiments ---------------------------------------------------------


def _with_headline(node: dict[str, Any], n_train: int) -> dict[str, Any]:
    """A node of `_exp_show` with the other headline metrics: baseline accuracy, train images."""
    metrics = node["data"]["metrics"]
    metrics["reports/baseline.json"] = {
        "data": {"logistic_regression": {"accuracy": 0.9286}, "nearest_centre": {"accuracy": 0.9}}
    }
    metrics["dvclive/metrics.json"] = {"data": {"n_train": n_train, "best_val_acc": 1.0}}
    return node


def test_experiments_table_keeps_varying_params_and_headline_metrics() -> None:
    data = _exp_show()
    _with_headline(data[1], 24)  # the commit, as `dvc repro` leaves it
    _with_headline(data[1]["experiments"][0]["revs"][0], 3)
    data[1]["data"]["params"]["params.yaml"]["data"]["split"]["train_fraction"] = 0.5  # a long
    text = experiments.table(exp_show_rows(data))
    lines = text.splitlines()
    # augment.recipe and train.source are the same in every run: left out
    header = "experiment seed train_per_class train_fraction factor test acc baseline train imgs"
    assert lines[0].split() == header.split()
    experiments_run = [f"e{x}{f}{s}" for x in (1, 2, 4) for f in (1, 8) for s in (0, 1)]
    assert [line.split()[0] for line in lines[1:]] == ["workspace", "main", *experiments_run]
    assert lines[2].split()[1:] == ["0", "3", "0.5", "8", "50.0%", "92.9%", "24"]
    assert lines[3].split()[-3:] == ["16.7%", "92.9%", "3"]
    assert lines[4].split()[-3:] == ["17.5%", "-", "-"]  # metrics a run lacks
    assert max(len(line) for line in lines) <= 100


def test_experiments_table_drops_params_that_do_not_fit_and_says_so() -> None:
    runs = exp_show_rows(_exp_show())
    lines = experiments.table(runs, width=50).splitlines()
    assert lines[0].split()[:2] == ["experiment", "seed"] and "factor" not in lines[0]
    assert lines[-1].startswith("(+2 varying params not shown") and "split." in lines[-1]
    assert max(len(line) for line in lines) <= 50


def test_short_param_names_stay_unambiguous() -> None:
    names = ["augment.workers", "detect.workers", "augment.factor"]
    assert experiments.short_names(names) == ["augment.workers", "detect.workers", "factor"]


def test_auto_recipe_is_grouped_as_the_recipe_its_domain_resolves_to() -> None:
    """`augment.recipe: auto` is medium for faces and keras for objects: the report must not
    pool the two domains' runs under one "recipe auto" (issue 15)."""
    runs = [
        Run(f"{d}{r}{s}", {"seed": s, "split.train_per_class": 3, "augment.factor": 8,
                           "augment.recipe": r, "domain": d}, {"m:acc": 0.5})
        for d, r in (("faces", "auto"), ("faces", "medium"), ("objects", "auto"))
        for s in (0, 1)
    ]  # fmt: skip
    cells, _ = aggregate(runs, metric="m:acc", group_by=["augment.factor", "augment.recipe"])
    sizes = {c.group: len(c.values) for c in cells}
    # faces' auto and an explicit medium are one setting; objects' auto is keras
    assert sizes == {"factor 8, recipe medium": 4, "factor 8, recipe keras": 2}
    legacy = Run("old", {"split.train_per_class": 3, "augment.recipe": "auto"}, {"m:acc": 0.5})
    assert aggregate([legacy], metric="m:acc", group_by=["augment.recipe"])[0][0].group == (
        "recipe medium"  # no domain param: from before domains, i.e. faces
    )
