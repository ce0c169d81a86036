"""baseline: how far face embeddings alone get, the bar fine-tuning must clear.

Two classifiers on the embed stage's vectors of the split's *train* rows, scored on
its *test* rows (the same rows evaluate scores the fine-tuned model on):

- ``nearest_centre``: weight imprinting (Qi et al., 2018): each class's weight is the
  mean of its (L2-normalised) training embeddings; a face gets the class with the
  most similar weight. No training at all, so it works from one image per class.
- ``logistic_regression``: a linear probe (multinomial, L2-regularised, lbfgs).

Results go to ``reports/baseline.json``, a DVC metric beside ``metrics/test.json``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.components.embedders import Embeddings, load_embeddings
from pipeline.core.config import BaselineParams
from pipeline.core.errors import StageError
from pipeline.core.manifest import read_rows
from pipeline.core.report import StageReport
from pipeline.core.rows import Split, SplitRow, rows_of

STAGE = "baseline"
METHODS = ("nearest_centre", "logistic_regression")


def run(params: BaselineParams, split_manifest: Path, embeddings: Path) -> StageReport:
    """Fit both baselines on the train rows and score them on the test rows."""
    rows = read_rows(split_manifest, SplitRow)
    vectors = load_embeddings(embeddings)
    train, test = rows_of(rows, Split.TRAIN), rows_of(rows, Split.TEST)
    _check_usable(train, test, split_manifest)
    x_train, x_test = (
        features(train, vectors, params.normalize),
        features(test, vectors, params.normalize),
    )
    classes = sorted({r.label for r in train})
    y_train = np.array([classes.index(r.label) for r in train])
    y_test = np.array([classes.index(r.label) if r.label in classes else -1 for r in test])
    predicted = {
        "nearest_centre": nearest_centre(x_train, y_train, x_test, len(classes), params.normalize),
        "logistic_regression": logistic_regression(x_train, y_train, x_test, params),
    }
    scores = {name: score(y_test, predicted[name], len(classes)) for name in METHODS}
    return StageReport(
        STAGE, len(rows), len(rows),  # val rows are not used; nothing is dropped
        extra={"n_train": len(train), "n_test": len(test), "classes": len(classes),
               "chance": round(1 / len(classes), 4), **scores},
    )  # fmt: skip


def _check_usable(train: list[SplitRow], test: list[SplitRow], source: Path) -> None:
    if not test:
        raise StageError(f"{source} has no test rows to score the baseline on")
    if len({r.label for r in train}) < 2:
        raise StageError(f"{source} needs train rows of at least 2 classes for a classifier")


def features(rows: list[SplitRow], vectors: Embeddings, normalize: bool) -> np.ndarray:
    """Embeddings of ``rows`` (float64), L2-normalised when ``normalize``."""
    missing = [r.path for r in rows if vectors.get(r.sha256) is None]
    if missing:
        raise StageError(
            f"{len(missing)} split row(s) have no embedding (e.g. {missing[0]}): "
            "run `prep embed` on the detect manifest the split came from"
        )
    matrix = np.asarray([vectors.vectors[r.sha256] for r in rows], dtype=np.float64)
    return _unit(matrix) if normalize else matrix


def _unit(matrix: np.ndarray) -> np.ndarray:
    return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)


def nearest_centre(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, n_classes: int, cosine: bool
) -> np.ndarray:
    """Weight imprinting: class weights are mean embeddings; cosine (or Euclidean) nearest."""
    centres = np.stack([x_train[y_train == k].mean(axis=0) for k in range(n_classes)])
    if cosine:
        return np.argmax(x_test @ _unit(centres).T, axis=1)
    d = ((x_test[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)
    return np.argmin(d, axis=1)


def logistic_regression(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, params: BaselineParams
) -> np.ndarray:
    """A multinomial linear probe; lbfgs is deterministic, so no seed is needed."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=params.logreg_c, max_iter=params.max_iter)
    model.fit(x_train, y_train)
    return model.predict(x_test)


def score(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict[str, float]:
    """Accuracy, and macro-F1 over the classes present in the test set (as evaluate does)."""
    accuracy = float(np.mean(y_true == y_pred)) if len(y_true) else 0.0
    f1s = []
    for k in range(n_classes):
        if not np.any(y_true == k):
            continue  # a class with no test image has no F1
        tp = int(np.sum((y_pred == k) & (y_true == k)))
        fp = int(np.sum((y_pred == k) & (y_true != k)))
        fn = int(np.sum((y_pred != k) & (y_true == k)))
        f1s.append(2 * tp / (2 * tp + fp + fn))
    macro = float(np.mean(f1s)) if f1s else 0.0
    return {"accuracy": round(accuracy, 4), "macro_f1": round(macro, 4)}
