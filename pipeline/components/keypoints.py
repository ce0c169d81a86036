"""Keypoint evidence that two crops hold the same pixels: SIFT matches under one similarity.

An edited copy of a photo (re-encoded, rescaled, cropped, slightly turned, mirrored,
retoned, watermarked) holds the same pixels moved by one similarity, so most of its
keypoint matches land within a fraction of a pixel of it; another photo of the same
sitting moves an eye, a mouth or the head, and fewer land that exactly. Used by
``pipeline.components.likeness`` (clean's same-photo test); measured by
``benchmarks/same_photo.py``. SIFT is free to use in OpenCV (its patent expired in 2020).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from pipeline.core.rows import Box

_KEYPOINT_ERODE = np.ones((9, 9), np.uint8)  # no keypoints on the edge of photo and padding
_RATIO = 0.8  # Lowe's ratio test for a keypoint match
_RANSAC_PX = 2.0  # a match within this of the fitted similarity is an inlier ...
_EXACT_PX = 0.4  # ... and within this, exact: the same pixels moved, not a similar face
_SPREAD_GRID = 3  # exact matches are counted in the cells of a 3 x 3 grid over the face:
MIN_CELLS = 3  # a copy has them in this many; one feature (an eye) matching proves little


@dataclass(frozen=True)
class Keypoints:
    """SIFT keypoints (positions, descriptors) of a crop, as it is and mirrored."""

    points: np.ndarray
    descriptors: np.ndarray | None
    mirrored_points: np.ndarray
    mirrored_descriptors: np.ndarray | None

    @classmethod
    def of(cls, gray: np.ndarray, valid: np.ndarray) -> Keypoints:
        return cls(*_sift(gray, valid), *_sift(gray[:, ::-1], valid[:, ::-1]))


def _sift(gray: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    mask = cv2.erode(valid.astype(np.uint8), _KEYPOINT_ERODE)
    found, descriptors = cv2.SIFT_create().detectAndCompute(np.ascontiguousarray(gray), mask)
    return np.float32([k.pt for k in found]).reshape(-1, 2), descriptors


@dataclass(frozen=True)
class KeypointMatch:
    """The similarity that maps the first crop's keypoints onto the second's (mirrored or
    not) and how exactly it does: ``exact`` matches within 0.4 px, their ``share`` of all
    matches passing the ratio test, and ``cells``, the 3 x 3 face cells they fall in."""

    transform: np.ndarray  # 2 x 3 float32, x_second = transform @ (x_first, 1)
    mirrored: bool
    exact: int
    share: float
    cells: int
    # every match passing the ratio test: its keypoint in the first crop, and how far the
    # transform misses its partner (px); ``outside`` counts again without some
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32), repr=False)
    misses: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32), repr=False)
    face: Box = (0.0, 0.0, 1.0, 1.0)

    @classmethod
    def counted(
        cls, transform: np.ndarray, mirrored: bool, points: np.ndarray, misses: np.ndarray,
        face: Box,
    ) -> KeypointMatch:  # fmt: skip
        exact = misses <= _EXACT_PX
        share = float(exact.mean()) if len(misses) else 0.0
        cells = _cells_hit(points[exact], face)
        return cls(transform, mirrored, int(exact.sum()), share, cells, points, misses, face)

    def outside(self, boxes: Sequence[Box]) -> KeypointMatch:
        """The match counted again without the matches whose first-crop keypoint lies in
        one of ``boxes``: the cells a mark covers (a watermark's letters are keypoints of
        their own that match nothing, and lower the share of a copy)."""
        keep = ~_inside(self.points, boxes)
        return self.counted(self.transform, self.mirrored, self.points[keep], self.misses[keep],
                            self.face)  # fmt: skip


def match_keypoints(own: Keypoints, other: Keypoints, face: Box) -> KeypointMatch | None:
    """SIFT matches (ratio test) of ``own`` to ``other`` and to ``other`` mirrored, a
    RANSAC similarity each (cv2.estimateAffinePartial2D), the one with more inliers;
    ``face`` (in ``own``'s crop) is the grid the exact matches must spread over.

    An edited copy holds the same pixels moved by one similarity (a crop, a rescale, a
    small turn, a mirror), so most matches land within a fraction of a pixel; another photo
    of the sitting moves an eye, a mouth, the head's turn: fewer land that exactly. None
    without three matches."""
    found = [
        _fit(own.points, own.descriptors, points, descriptors, mirrored, face)
        for points, descriptors, mirrored in (
            (other.points, other.descriptors, False),
            (other.mirrored_points, other.mirrored_descriptors, True),
        )
    ]
    matched = [m for m in found if m is not None]
    return max(matched, key=lambda m: (m[1], m[0].exact))[0] if matched else None


def _fit(
    a: np.ndarray, da: np.ndarray | None, b: np.ndarray, db: np.ndarray | None,
    mirrored: bool, face: Box,
) -> tuple[KeypointMatch, int] | None:  # fmt: skip
    """(the match, its RANSAC inlier count) of keypoints ``a`` onto ``b``."""
    if da is None or db is None or len(a) < 2 or len(b) < 2:
        return None
    pairs = cv2.BFMatcher(cv2.NORM_L2).knnMatch(da, db, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < _RATIO * p[1].distance]
    if len(good) < 3:
        return None
    src = a[[g.queryIdx for g in good]]
    dst = b[[g.trainIdx for g in good]]
    transform, inliers = cv2.estimateAffinePartial2D(
        src, dst, method=cv2.RANSAC, ransacReprojThreshold=_RANSAC_PX, maxIters=2000,
        confidence=0.999,
    )  # fmt: skip
    if transform is None or inliers.sum() < 3:
        return None
    inliers = inliers.ravel().astype(bool)
    refined, _ = cv2.estimateAffinePartial2D(src[inliers], dst[inliers], method=cv2.LMEDS)
    transform = refined if refined is not None else transform
    misses = np.linalg.norm(src @ transform[:, :2].T + transform[:, 2] - dst, axis=1)
    match = KeypointMatch.counted(transform.astype(np.float32), mirrored, src, misses, face)
    return match, int(inliers.sum())


def _cells_hit(points: np.ndarray, face: Box) -> int:
    """How many cells of a 3 x 3 grid over the face hold at least one of ``points``."""
    x1, y1, x2, y2 = face
    column = np.floor((points[:, 0] - x1) / (x2 - x1) * _SPREAD_GRID).astype(int)
    row = np.floor((points[:, 1] - y1) / (y2 - y1) * _SPREAD_GRID).astype(int)
    inside = (column >= 0) & (column < _SPREAD_GRID) & (row >= 0) & (row < _SPREAD_GRID)
    return len(set(zip(column[inside].tolist(), row[inside].tolist(), strict=True)))


def _inside(points: np.ndarray, boxes: Sequence[Box]) -> np.ndarray:
    """Which ``points`` lie in any of ``boxes`` (bool per point)."""
    x, y = points[:, 0], points[:, 1]
    inside = np.zeros(len(points), bool)
    for x1, y1, x2, y2 in boxes:
        inside |= (x >= x1) & (x < x2) & (y >= y1) & (y < y2)
    return inside
