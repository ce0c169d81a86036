"""Label checks for objects: an image whose class, judged by all the other images, is another.

Faces are checked by identity (``identity``: far from the class's centre, i.e. someone else).
Object classes are not tight clusters around one centre (a sandal class holds flat and
strapped ones), so for objects the question is asked the way confident learning asks it
(Northcutt et al., 2021), without its AGPL library: a logistic regression on the
embeddings, cross-validated, gives every image class probabilities from a model that never
saw it. An image is ``wrong_label`` when another class is clearly more likely than its own:

    p(other) >= wrong_label_prob  and  p(other) >= wrong_label_ratio x p(given)

The reject names that class in ``conflict_label`` and its most typical image (the one
nearest its class's mean) in ``conflict_with``. Thresholds were measured on Fashion-MNIST
with flipped labels (README "Label cleaning"; benchmarks/label_noise.py).

``clean.checks`` picks identity or label checks; ``auto`` is the domain's (``CHECKS``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from pipeline.core.config import CleanParams
from pipeline.core.manifest import reject
from pipeline.core.registry import Registry
from pipeline.core.rows import CleanRow, Reason, Rejected

CHECKS: Registry[Callable[[], str]] = Registry("clean check")
LOGREG_C = 1.0  # the baseline stage's default probe; unit-length features need no tuning
SEED = 0  # fold assignment: fixed, so a rerun of clean gives the same rejects


@CHECKS.register(
    "identity", help="faces: wrong person (far from the class centre), same face in 2 classes",
    default_for=("faces",),
)  # fmt: skip
def identity() -> str:
    return "identity"


@CHECKS.register(
    "labels", help="objects: wrong_label from cross-validated class probabilities; same image "
    "in 2 classes", default_for=("objects",),
)  # fmt: skip
def labels() -> str:
    return "labels"


def check_kind(params: CleanParams) -> str:
    """``identity`` or ``labels``: ``clean.checks``, with ``auto`` resolved by the domain."""
    return CHECKS.get(CHECKS.resolve(params.checks, params.domain))()


@dataclass(frozen=True)
class WrongLabel:
    index: int
    given: str
    likely: str
    p_given: float
    p_likely: float

    def describe(self, rule: str) -> str:
        return (
            f"out-of-sample class probability {self.p_likely:.2f} for {self.likely!r} vs "
            f"{self.p_given:.2f} for its label {self.given!r} ({rule})"
        )


def out_of_sample_probs(
    labels: list[str], matrix: np.ndarray, folds: int
) -> tuple[list[str], np.ndarray] | None:
    """Classes and each row's class probabilities from a model fitted on the other folds.

    None when a class has a single image: no fold could both train on and test it.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    classes = sorted(set(labels))
    y = np.array([classes.index(label) for label in labels])
    smallest = int(np.bincount(y).min()) if len(classes) > 1 else 0
    if len(classes) < 2 or smallest < 2:
        return None
    probs = np.zeros((len(labels), len(classes)))
    splitter = StratifiedKFold(n_splits=min(folds, smallest), shuffle=True, random_state=SEED)
    for train, test in splitter.split(matrix, y):
        model = LogisticRegression(C=LOGREG_C, max_iter=2000)
        model.fit(matrix[train], y[train])
        probs[np.ix_(test, model.classes_)] = model.predict_proba(matrix[test])
    return classes, probs


def find_wrong_labels(
    labels: list[str], matrix: np.ndarray, folds: int, min_prob: float, ratio: float
) -> list[WrongLabel]:
    """Rows whose out-of-sample probabilities clearly favour another class."""
    found = out_of_sample_probs(labels, matrix, folds)
    return [] if found is None else flag_wrong_labels(labels, *found, min_prob, ratio)


def flag_wrong_labels(
    labels: list[str], classes: list[str], probs: np.ndarray, min_prob: float, ratio: float
) -> list[WrongLabel]:
    """The rule on given probabilities (rows of ``probs`` in ``classes`` order)."""
    wrong = []
    for i, label in enumerate(labels):
        own = classes.index(label)
        others = probs[i].copy()
        others[own] = -1.0
        best = int(np.argmax(others))
        p_own, p_best = float(probs[i, own]), float(probs[i, best])
        if p_best >= min_prob and p_best >= ratio * p_own:
            wrong.append(WrongLabel(i, label, classes[best], p_own, p_best))
    return wrong


def drop_wrong_labels(
    rows: list[CleanRow], matrix: np.ndarray, params: CleanParams, stage: str
) -> tuple[list[CleanRow], list[Rejected]]:
    """clean's label check: (kept rows, ``wrong_label`` rejects naming the likely class)."""
    if not rows:
        return rows, []
    labels = [row.label for row in rows]
    wrong = find_wrong_labels(
        labels, matrix, params.wrong_label_folds, params.wrong_label_prob,
        params.wrong_label_ratio,
    )  # fmt: skip
    rule = f"wrong_label_prob {params.wrong_label_prob}, ratio {params.wrong_label_ratio}"
    gone = {w.index for w in wrong}
    rejects = []
    for w in wrong:
        typical = _typical(rows, matrix, w.likely, gone)
        row = reject(rows[w.index], stage, Reason.WRONG_LABEL, w.describe(rule), typical)
        rejects.append(row if typical else _naming(row, w.likely))
    return [row for i, row in enumerate(rows) if i not in gone], rejects


def _typical(
    rows: list[CleanRow], matrix: np.ndarray, label: str, gone: set[int]
) -> CleanRow | None:
    """The image of ``label`` nearest its class's mean direction (for the audit sheet)."""
    idx = [i for i, row in enumerate(rows) if row.label == label and i not in gone]
    if not idx:
        return None
    centre = matrix[idx].mean(axis=0)
    return rows[idx[int(np.argmax(matrix[idx] @ centre))]]


def _naming(row: Rejected, label: str) -> Rejected:
    return replace(row, conflict_label=label)
