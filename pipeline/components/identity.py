"""Who is in each crop: class centres, outliers and cross-class conflicts from face embeddings.

Pure functions on arrays (labels, vectors), so the clean stage and the tests share them.
Distances are Euclidean between embeddings (dlib's scale: the same person is usually
below 0.6, the same photo re-encoded below 0.2).

The method, in the order clean applies it:

- **label_conflict**: two images in *different* classes whose embeddings are closer than
  a tight threshold show the same face (usually the same photo under two names).
  ``reject_both`` drops every copy (we cannot know which name is right);
  ``keep_majority`` keeps the copy in the class whose centre is nearest to the face.
- **wrong_identity**: each class gets a *robust centre*: start at the medoid (the member
  with the smallest median distance to the others), then average the members within
  ``TRIM`` x the median distance of it, a few rounds, so one intruder cannot drag the
  centre towards itself. Each image is measured against the centre of the *other*
  members of its class (leave-one-out). It is rejected when that distance exceeds the
  limit: ``absolute`` (a fixed distance) or ``relative`` (``relative`` x the class's
  spread, the median of those distances, but never below the absolute floor), or when
  its distance to its own centre exceeds ``nearer_ratio`` x its distance to another
  class's centre (with 1.0: it looks more like someone else in the dataset).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.spatial.distance import cdist  # exact near 0, unlike the |a|^2 + |b|^2 - 2ab shortcut

TRIM = 1.5  # members beyond this x the median distance do not shape the centre
ROUNDS = 5
MIN_JUDGED = 3  # with fewer images a class has no majority to call one image odd
LEAVE_ONE_OUT_MAX = 200  # above this, one member barely moves the centre: skip the refits
_BLOCK = 1024

Mode = Literal["off", "absolute", "relative"]
Policy = Literal["reject_both", "keep_majority"]


def distances(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """Euclidean distances between the rows of ``a`` and of ``b`` (default: ``a``)."""
    a = np.asarray(a, dtype=np.float64)
    return cdist(a, a if b is None else np.asarray(b, dtype=np.float64))


def medoid_index(vectors: np.ndarray) -> int:
    """The member with the smallest median distance to the others (ties: the first)."""
    if len(vectors) <= 2:
        return 0
    matrix = distances(vectors)
    others = matrix[~np.eye(len(vectors), dtype=bool)].reshape(len(vectors), -1)
    return int(np.argmin(np.median(others, axis=1)))


def robust_centre(vectors: np.ndarray) -> np.ndarray:
    """A class centre that outliers do not pull: medoid, then trimmed means around it."""
    vectors = np.asarray(vectors, dtype=np.float64)
    centre = vectors[medoid_index(vectors)]
    for _ in range(ROUNDS):
        spread = np.linalg.norm(vectors - centre, axis=1)
        inliers = spread <= TRIM * np.median(spread) + 1e-12
        updated = vectors[inliers].mean(axis=0)
        if np.allclose(updated, centre):
            break
        centre = updated
    return centre


def centre_distances(vectors: np.ndarray) -> np.ndarray:
    """Each member's distance to the robust centre of the *other* members.

    Leaving the member out keeps an intruder from shortening its own distance.
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    n = len(vectors)
    if n < 2:
        return np.zeros(n)
    if n > LEAVE_ONE_OUT_MAX:
        return np.linalg.norm(vectors - robust_centre(vectors), axis=1)
    keep = ~np.eye(n, dtype=bool)
    return np.array(
        [np.linalg.norm(vectors[i] - robust_centre(vectors[keep[i]])) for i in range(n)]
    )


@dataclass(frozen=True)
class IdentityRule:
    """When an image is too far from its class to be the same person."""

    mode: Mode
    max_distance: float  # absolute: the limit; relative: the floor under the limit
    relative: float  # relative: limit = relative x the class's spread
    nearer_ratio: float | None  # reject when own > nearer_ratio x nearest other centre

    def limit(self, spread: float) -> float:
        if self.mode == "absolute":
            return self.max_distance
        return max(self.max_distance, self.relative * spread)


@dataclass(frozen=True)
class Outlier:
    """An image judged not to show its class's person, with the numbers that decided it."""

    index: int
    distance: float  # to its own class centre (leave-one-out)
    limit: float
    spread: float
    nearer_label: str | None = None  # set when another class's centre is nearer
    nearer_distance: float | None = None

    def describe(self) -> str:
        own = f"distance {self.distance:.3f} to its class centre"
        if self.nearer_label is not None and self.distance <= self.limit:
            return f"{own} > {self.nearer_distance:.3f} to class {self.nearer_label!r}'s centre"
        text = f"{own} > limit {self.limit:.3f} (class spread {self.spread:.3f})"
        if self.nearer_label is not None:
            text += f"; nearer to class {self.nearer_label!r} ({self.nearer_distance:.3f})"
        return text


def class_indices(labels: Sequence[str]) -> dict[str, np.ndarray]:
    """Row indices per class, classes sorted."""
    groups: dict[str, list[int]] = defaultdict(list)
    for index, label in enumerate(labels):
        groups[label].append(index)
    return {label: np.asarray(groups[label]) for label in sorted(groups)}


def find_wrong_identity(
    labels: Sequence[str], vectors: np.ndarray, rule: IdentityRule
) -> list[Outlier]:
    """Images far from their class centre (classes of fewer than MIN_JUDGED are not judged)."""
    if rule.mode == "off" or len(labels) == 0:
        return []
    vectors = np.asarray(vectors, dtype=np.float64)
    members = class_indices(labels)
    centres = {label: robust_centre(vectors[idx]) for label, idx in members.items()}
    outliers: list[Outlier] = []
    for label, idx in members.items():
        if len(idx) < MIN_JUDGED:
            continue
        own = centre_distances(vectors[idx])
        spread = float(np.median(own))
        limit = rule.limit(spread)
        for k, row in enumerate(idx):
            nearer = _nearer_class(vectors[row], float(own[k]), label, centres, rule.nearer_ratio)
            if own[k] > limit or nearer is not None:
                name, dist = nearer if nearer is not None else (None, None)
                outliers.append(Outlier(int(row), float(own[k]), limit, spread, name, dist))
    return sorted(outliers, key=lambda o: o.index)


def _nearer_class(
    vector: np.ndarray,
    own: float,
    label: str,
    centres: dict[str, np.ndarray],
    ratio: float | None,
) -> tuple[str, float] | None:
    """The other class whose centre is nearest, if ``own`` exceeds ``ratio`` x that distance."""
    others = [
        (float(np.linalg.norm(vector - c)), name) for name, c in centres.items() if name != label
    ]
    if ratio is None or not others:
        return None
    best, name = min(others)
    return (name, best) if own > ratio * best else None


def close_pairs(vectors: np.ndarray, max_distance: float) -> Iterator[tuple[int, int, float]]:
    """Every pair ``i < j`` closer than ``max_distance``, in blocks (no n x n matrix)."""
    vectors = np.asarray(vectors, dtype=np.float64)
    for start in range(0, len(vectors), _BLOCK):
        block = distances(vectors[start : start + _BLOCK], vectors)
        for r, c in zip(*np.nonzero(block < max_distance), strict=True):
            i, j = start + int(r), int(c)
            if i < j:
                yield i, j, float(block[r, c])


@dataclass(frozen=True)
class Conflict:
    """An image rejected because the same face is in another class."""

    index: int
    partner: int  # the nearest copy in another class
    distance: float
    kept_label: str | None  # keep_majority: the class whose copy survives


def find_label_conflicts(
    labels: Sequence[str], vectors: np.ndarray, max_distance: float, policy: Policy
) -> list[Conflict]:
    """Faces that appear in more than one class (distance below ``max_distance``).

    Copies are joined into components (a face may be in three classes); ``reject_both``
    rejects every member, ``keep_majority`` keeps the members of the class whose robust
    centre is nearest to the face and rejects the rest (all of them on a tie).
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    edges = [(i, j, d) for i, j, d in close_pairs(vectors, max_distance) if labels[i] != labels[j]]
    if not edges:
        return []
    nearest: dict[int, tuple[float, int]] = {}
    for i, j, d in edges:
        nearest[i] = min(nearest.get(i, (np.inf, -1)), (d, j))
        nearest[j] = min(nearest.get(j, (np.inf, -1)), (d, i))
    conflicts: list[Conflict] = []
    for component in components(len(labels), [(i, j) for i, j, _ in edges]):
        if len(component) < 2:
            continue
        keep = _majority(component, labels, vectors) if policy == "keep_majority" else None
        for index in component:
            if labels[index] != keep:
                d, partner = nearest[index]
                conflicts.append(Conflict(index, partner, d, keep))
    return sorted(conflicts, key=lambda c: c.index)


def _majority(component: list[int], labels: Sequence[str], vectors: np.ndarray) -> str | None:
    """The class whose centre is nearest to the shared face; None on a tie."""
    face = vectors[component].mean(axis=0)
    ranked = sorted(
        (float(np.linalg.norm(face - robust_centre(vectors[np.asarray(idx)]))), label)
        for label, idx in class_indices(labels).items()
        if label in {labels[i] for i in component}
    )
    if len(ranked) > 1 and np.isclose(ranked[0][0], ranked[1][0]):
        return None
    return ranked[0][1]


def components(n: int, edges: Sequence[tuple[int, int]]) -> list[list[int]]:
    """Connected components of ``range(n)`` under ``edges`` (union-find), sorted members."""
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in edges:
        a, b = root(i), root(j)
        if a != b:
            parent[max(a, b)] = min(a, b)
    groups: dict[int, list[int]] = defaultdict(list)
    for i in range(n):
        groups[root(i)].append(i)
    return [groups[r] for r in sorted(groups)]
