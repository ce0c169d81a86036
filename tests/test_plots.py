"""`prep plots` without a trained pipeline: names, static specs, rendering, the errors.

The end-to-end run on real DVC output is in test_pipeline_dvc.py.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import vl_convert
from dvc_project import copy_project, init_repo
from PIL import Image
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.cli.plots import SCALE, VL_VERSION, png_name, render_png, static_spec

# DVC's confusion template in short: a checkbox param, and text shown only when it is ticked
CONFUSION = {
    "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
    "data": {"values": [{"actual": "a", "predicted": "a"}, {"actual": "b", "predicted": "a"}]},
    "params": [{"name": "showValues", "bind": {"input": "checkbox"}}],
    "width": 300,
    "height": 300,
    "encoding": {
        "x": {"field": "actual", "type": "nominal"},
        "y": {"field": "predicted", "type": "nominal"},
    },
    "layer": [
        {"mark": "rect", "encoding": {"color": {"aggregate": "count", "type": "quantitative"}}},
        {
            "mark": "text",
            "encoding": {"text": {"condition": {"param": "showValues", "aggregate": "count"}}},
        },
    ],
}


def test_png_names_flatten_the_plotted_path() -> None:
    assert (
        png_name("dvclive/plots/metrics/train/loss.tsv") == "dvclive_plots_metrics_train_loss.png"
    )
    assert png_name("metrics/mistakes.png") == "metrics_mistakes.png"


def test_checkboxes_are_ticked_and_the_rest_left_alone() -> None:
    spec = static_spec(CONFUSION)
    assert spec["params"] == [{**CONFUSION["params"][0], "value": True}]
    assert "value" not in CONFUSION["params"][0]  # the input is not modified
    slider = {"name": "smooth", "value": 0.001, "bind": {"input": "range"}}
    assert static_spec({"params": [slider]})["params"] == [slider]


def test_a_spec_renders_offline_to_a_png() -> None:
    with Image.open(io.BytesIO(render_png(CONFUSION))) as image:
        assert image.format == "PNG" and image.width >= 600 and image.height >= 600  # scale 2
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
    assert colours is not None and len(colours) > 20  # cells, text and axes, not a blank page
    unticked = vl_convert.vegalite_to_png(CONFUSION, vl_version=VL_VERSION, scale=SCALE)
    assert unticked != render_png(CONFUSION)  # ticking "show values" drew the counts


def test_nothing_trained_yet_says_run_dvc_repro(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = copy_project(tmp_path / "project")
    monkeypatch.chdir(tmp_path)
    outside = CliRunner().invoke(app, ["plots"])
    assert outside.exit_code == 2 and "no dvc.yaml here" in outside.output
    init_repo(root)
    monkeypatch.chdir(root)
    result = CliRunner().invoke(app, ["plots"])
    assert result.exit_code == 2
    assert "metrics/predictions.csv: not found" in result.output
    assert "run `dvc repro` first" in result.output
    assert not (root / "reports" / "plots").exists()
