from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny_faces import make_dataset

from pipeline.core.errors import StageError
from pipeline.core.manifest import read_manifest, write_manifest
from pipeline.core.params import load_params
from stages import evaluate, train
from stages.evaluate import Predictions, compute_metrics, confusion, macro_f1, top_k_accuracy


def test_confusion_and_macro_f1_on_a_known_case() -> None:
    labels = np.array([0, 0, 1, 1, 2, 2])
    predicted = np.array([0, 1, 1, 1, 2, 0])
    matrix = confusion(labels, predicted, 3)
    assert matrix.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    # F1 per class: 2*1/(2+2)=0.5, 2*2/(2+3)=0.8, 2*1/(2+1)=0.667
    assert macro_f1(matrix) == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)


def test_macro_f1_ignores_classes_without_test_images() -> None:
    matrix = confusion(np.array([0, 0]), np.array([0, 0]), 3)
    assert macro_f1(matrix) == 1.0


def test_top_k_and_per_class_metrics() -> None:
    probs = np.array([[0.6, 0.3, 0.1], [0.5, 0.4, 0.1], [0.2, 0.3, 0.5], [0.1, 0.2, 0.7]])
    labels = np.array([0, 1, 2, 0])
    assert top_k_accuracy(labels, probs, 1) == 0.5
    assert top_k_accuracy(labels, probs, 2) == 0.75
    assert top_k_accuracy(labels, probs, 10) == 1.0  # capped at the number of classes
    metrics = compute_metrics(Predictions(labels, probs), ["a", "b", "c"], top_k=2)
    assert metrics["accuracy"] == 0.5 and metrics["top2_accuracy"] == 0.75
    assert metrics["per_class_accuracy"] == {"a": 0.5, "b": 0.0, "c": 1.0}


def _trained(root: Path) -> Path:
    split, aug = make_dataset(root)
    tiny = {"train.backbone": "efficientnet_lite0", "train.image_size": 32, "train.epochs": 10}
    p = load_params(overrides={**tiny, "train.lr": 0.01})
    train.run(p.train, 0, aug, split, Path("models"), Path("dvclive"))
    return split


def test_evaluate_writes_metrics_predictions_and_mistakes(in_tmp: Path) -> None:
    split = _trained(Path("data"))
    p = load_params(overrides={"evaluate.mistakes": 4, "evaluate.thumb": 48}).evaluate
    report = evaluate.run(p, Path("models"), split, Path("metrics"))
    metrics = json.loads(Path("metrics/test.json").read_text())
    assert metrics["n_test"] == 6 and report.n_in == 6
    assert 0.0 <= metrics["macro_f1"] <= 1.0
    assert metrics["accuracy"] <= metrics["top3_accuracy"] == 1.0  # 3 classes: top-3 is all
    assert set(metrics["per_class_accuracy"]) == {"class0", "class1", "class2"}
    with Path("metrics/predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 6 and set(rows[0]) == {"path", "actual", "predicted", "confidence"}
    correct = sum(r["actual"] == r["predicted"] for r in rows)
    assert correct / 6 == pytest.approx(metrics["accuracy"])
    with Image.open("metrics/mistakes.png") as sheet:
        assert sheet.width == 8 * 48
    assert metrics["ece"] >= 0 and metrics["nll"] > 0 and "nll_uncalibrated" in metrics


def test_confidences_use_the_temperature_train_fitted(in_tmp: Path) -> None:
    """predictions.csv's confidences are softmax(logits / T) with model.json's temperature."""
    split = _trained(Path("data"))
    meta_path = Path("models/model.json")
    meta = json.loads(meta_path.read_text())
    assert meta["temperature"] > 0  # fitted on the val rows
    p = load_params().evaluate
    confidences = {}
    for temperature in (1.0, 4.0):
        meta_path.write_text(json.dumps({**meta, "temperature": temperature}))
        evaluate.run(p, Path("models"), split, Path(f"m{temperature}"))
        with Path(f"m{temperature}/predictions.csv").open() as handle:
            rows = list(csv.DictReader(handle))
        confidences[temperature] = [float(r["confidence"]) for r in rows]
        metrics = json.loads(Path(f"m{temperature}/test.json").read_text())
        assert metrics["temperature"] == temperature
    hot, cold = confidences[4.0], confidences[1.0]
    assert all(h < c for h, c in zip(hot, cold, strict=True))  # a higher T flattens


def test_test_rows_of_unknown_classes_are_an_error(in_tmp: Path) -> None:
    split = _trained(Path("data"))
    rows = read_manifest(split)
    rows[-1] = {**rows[-1], "label": "stranger"}
    write_manifest(split, rows)
    p = load_params().evaluate
    with pytest.raises(StageError, match="stranger"):
        evaluate.run(p, Path("models"), split, Path("metrics"))
