"""evaluate: score the trained model on the split's test rows.

Writes, under ``out`` (``metrics/`` in the pipeline):
- ``test.json``: accuracy, macro-F1, top-k accuracy, per-class accuracy, and calibration:
  expected calibration error and NLL with the temperature train fitted on the val rows
  (``ece``, ``nll``) and without it (``*_uncalibrated``) (DVC metrics);
- ``predictions.csv``: one row per test image (actual, predicted, calibrated confidence), which
  ``dvc plots show`` renders as a confusion matrix (dvc.yaml's ``confusion`` template);
- ``mistakes.png``: a contact sheet of the most confident mistakes, the quickest way to see
  whether errors are label noise, bad crops or genuinely hard faces.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from pipeline.components.backbones import Aligner
from pipeline.components.calibration import (
    expected_calibration_error,
    negative_log_likelihood,
    softmax,
)
from pipeline.components.classifier import Normalize, load_images, load_model
from pipeline.core.config import EvaluateParams
from pipeline.core.devices import resolve_device
from pipeline.core.errors import StageError
from pipeline.core.files import atomic_write_bytes, atomic_write_text
from pipeline.core.images import MAX_PIXELS, load_rgb
from pipeline.core.manifest import read_rows
from pipeline.core.report import StageReport
from pipeline.core.rows import Split, SplitRow, rows_of

STAGE = "evaluate"


@dataclass
class Predictions:
    labels: np.ndarray  # (N,) true class index
    probs: np.ndarray  # (N, C) softmax of logits / temperature: what every output uses
    logits: np.ndarray | None = None  # (N, C), for calibration without the temperature


# --- metrics (pure) ---------------------------------------------------------------------


def confusion(labels: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """``m[true, predicted]`` counts."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    return matrix


def macro_f1(matrix: np.ndarray) -> float:
    """Mean F1 over classes present in the test set (a class with no test image has no F1)."""
    tp = np.diag(matrix).astype(float)
    support = matrix.sum(axis=1)
    predicted = matrix.sum(axis=0)
    denom = support + predicted
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    present = support > 0
    return float(f1[present].mean()) if present.any() else 0.0


def top_k_accuracy(labels: np.ndarray, probs: np.ndarray, k: int) -> float:
    k = min(k, probs.shape[1])
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return float((top == labels[:, None]).any(axis=1).mean())


def compute_metrics(pred: Predictions, classes: Sequence[str], top_k: int) -> dict[str, Any]:
    predicted = pred.probs.argmax(axis=1)
    matrix = confusion(pred.labels, predicted, len(classes))
    support = matrix.sum(axis=1)
    per_class = {
        name: float(matrix[i, i] / support[i]) for i, name in enumerate(classes) if support[i]
    }
    k = min(top_k, len(classes))
    return {
        "accuracy": float((predicted == pred.labels).mean()),
        "macro_f1": macro_f1(matrix),
        f"top{k}_accuracy": top_k_accuracy(pred.labels, pred.probs, k),
        **calibration_metrics(pred),
        "n_test": len(pred.labels),
        "n_classes": len(classes),
        "per_class_accuracy": per_class,
    }


def calibration_metrics(pred: Predictions) -> dict[str, float]:
    """ECE and NLL of the probabilities used, and of the raw softmax when logits are known."""
    metrics = {
        "ece": expected_calibration_error(pred.probs, pred.labels),
        "nll": negative_log_likelihood(pred.probs, pred.labels),
    }
    if pred.logits is not None:
        raw = softmax(pred.logits)
        metrics["ece_uncalibrated"] = expected_calibration_error(raw, pred.labels)
        metrics["nll_uncalibrated"] = negative_log_likelihood(raw, pred.labels)
    return {k: round(v, 6) for k, v in metrics.items()}


# --- the stage --------------------------------------------------------------------------


def run(params: EvaluateParams, model_dir: Path, split_manifest: Path, out: Path) -> StageReport:
    """Predict every test row, write metrics, predictions and the mistakes sheet."""
    model, backbone, meta = load_model(model_dir)
    align = backbone.aligner() if backbone.aligner else None
    classes: list[str] = meta["classes"]
    rows = rows_of(read_rows(split_manifest, SplitRow), Split.TEST)
    if not rows:
        raise StageError(f"no test rows in {split_manifest}: lower split.val_per_class / train")
    normalize = Normalize(meta["mean"], meta["std"])
    pred = predict(model, normalize, rows, classes, meta, params, align)
    metrics = compute_metrics(pred, classes, params.top_k)
    metrics["temperature"] = pred_temperature(meta)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "test.json", json.dumps(metrics, indent=2) + "\n")
    write_predictions(out / "predictions.csv", rows, pred, classes)
    atomic_write_bytes(out / "mistakes.png", mistakes_sheet(rows, pred, classes, params))
    headline = {k: v for k, v in metrics.items() if k != "per_class_accuracy"}
    return StageReport.from_rows(STAGE, len(rows), rows, [], **headline)


def predict(
    model: torch.nn.Module, normalize: Normalize, rows: Sequence[SplitRow], classes: Sequence[str],
    meta: dict[str, Any], params: EvaluateParams, align: Aligner | None = None,
) -> Predictions:  # fmt: skip
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted({r.label for r in rows} - index.keys())
    if unknown:
        raise StageError(f"test rows have classes the model was not trained on: {unknown[:5]}")
    device = resolve_device(params.device)
    model.to(device).eval()
    normalize.to(device)
    logits = []
    with torch.inference_mode():
        for start in range(0, len(rows), params.batch_size):
            chunk = rows[start : start + params.batch_size]
            images = load_images(chunk, meta["image_size"], align).to(device)
            logits.append(model(normalize(images)).float().cpu().numpy())
    labels = np.array([index[r.label] for r in rows], dtype=np.int64)
    raw = np.concatenate(logits)
    return Predictions(labels, softmax(raw, pred_temperature(meta)), raw)


def pred_temperature(meta: dict[str, Any]) -> float:
    """The temperature train fitted on the val rows (1.0 for a model saved before it did)."""
    return float(meta.get("temperature", 1.0))


def write_predictions(
    path: Path, rows: Sequence[SplitRow], pred: Predictions, classes: Sequence[str]
) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "actual", "predicted", "confidence"])
    for row, label, probs in zip(rows, pred.labels, pred.probs, strict=True):
        best = int(probs.argmax())
        writer.writerow([row.path, classes[label], classes[best], f"{probs[best]:.4f}"])
    atomic_write_text(path, buffer.getvalue())


def mistakes_sheet(
    rows: Sequence[SplitRow], pred: Predictions, classes: Sequence[str], params: EvaluateParams
) -> bytes:
    """PNG grid of the most confident wrong predictions, captioned ``true > predicted p``."""
    predicted = pred.probs.argmax(axis=1)
    confidence = pred.probs.max(axis=1)
    wrong = np.flatnonzero(predicted != pred.labels)
    worst = wrong[np.argsort(-confidence[wrong], kind="stable")][: params.mistakes]
    thumb, caption, cols = params.thumb, 14, 8
    n_rows = max(1, -(-len(worst) // cols))
    sheet = Image.new("RGB", (cols * thumb, n_rows * (thumb + caption)), "white")
    draw = ImageDraw.Draw(sheet)
    if not len(worst):
        draw.text((4, 4), "no mistakes", fill="black")
    for slot, i in enumerate(worst):
        x, y = (slot % cols) * thumb, (slot // cols) * (thumb + caption)
        image = Image.fromarray(load_rgb(Path(rows[i].path), MAX_PIXELS))
        sheet.paste(image.resize((thumb, thumb)), (x, y))
        text = f"{classes[pred.labels[i]]}>{classes[predicted[i]]} {confidence[i]:.2f}"
        draw.text((x + 2, y + thumb + 1), text[: thumb // 6], fill="black")
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    return buffer.getvalue()
