"""How alike two face crops are as pictures: sharpness, perceptual hash, same-photo test.

All functions take grayscale uint8 crops and a ``valid`` mask (True where the crop shows
the photo; see ``pipeline.crops``), so padding never counts as picture content.

``photo_match`` answers "are these two crops cut from the same photo?": detect already
aligned both on the face, so a residual affine registration (OpenCV's ECC) of one onto the
other leaves a correlation near 1 for the same photo, re-encoded, resized, recropped,
rotated, retoned or mirrored, and clearly lower for another photo of the same person.
Measured on real crops (dlib's 5 x 11 headshots, face_recognition's photos): same photo
0.989-1.000, another photo of the same person at most 0.964.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from pipeline.core.crops import face_box_in_crop, valid_mask_of
from pipeline.core.images import MAX_PIXELS, ImageError, load_rgb
from pipeline.core.rows import Box, FaceRow, ImageRow

if TYPE_CHECKING:
    from pipeline.components.embedders import Embeddings

_HASH_SIDE = 32
_ERODE = np.ones((5, 5), np.uint8)  # keep away from the edge between photo and padding
_MIN_SHARED = 0.15  # below this share of the crop shown by both, no verdict (0.0)
_ECC_CRITERIA = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 1e-4)
_MIN_SCALE = 0.75  # a registration may rescale by 0.75-1.33x (detector jitter, recrops) ...
_MAX_DRIFT = 0.25  # ... and move by a quarter of the crop from where it started


@dataclass(frozen=True)
class Picture:
    """What the likeness checks need of a crop: grey pixels, where the photo is, the face."""

    gray: np.ndarray
    valid: np.ndarray  # True where the crop shows the photo, False on padding
    face: Box  # the face box in crop pixels

    @classmethod
    def of(cls, rgb: np.ndarray, valid: np.ndarray, face: Box) -> Picture:
        return cls(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), valid, face)

    @classmethod
    def of_row(cls, rgb: np.ndarray, row: ImageRow) -> Picture:
        """From a decoded crop and its manifest row (which records the geometry)."""
        size = rgb.shape[0]
        return cls.of(rgb, valid_mask_of(row, size), face_box_in_crop(row, size))

    @property
    def centre(self) -> tuple[float, float]:
        x1, y1, x2, y2 = self.face
        return (x1 + x2) / 2, (y1 + y2) / 2

    def sharpness(self) -> float:
        """Laplacian variance over the face, padding left out (blur is judged on the face)."""
        x1, y1, x2, y2 = self.face
        region = np.zeros_like(self.valid)
        region[max(0, round(y1)) : round(y2), max(0, round(x1)) : round(x2)] = True
        return laplacian_variance(self.gray, region & self.valid)

    def hash(self) -> str:
        return phash(self.gray, self.valid)

    def match(self, other: Picture) -> float:
        """``photo_match`` of the two crops: ~1 when they show the same photo."""
        return photo_match(
            self.gray, other.gray, self.valid, other.valid, (self.centre, other.centre)
        )


def laplacian_variance(gray: np.ndarray, region: np.ndarray | None = None) -> float:
    """Sharpness: low when edges are smeared. ``region`` (bool) limits it to the face."""
    laplacian = cv2.Laplacian(gray, cv2.CV_64F)
    if region is None:
        return float(laplacian.var())
    inner = cv2.erode(region.astype(np.uint8), _ERODE).astype(bool)
    return float(laplacian[inner].var()) if inner.sum() > 16 else float(laplacian.var())


def phash(gray: np.ndarray, region: np.ndarray | None = None) -> str:
    """Perceptual hash: signs of the 8x8 lowest DCT frequencies against their median.

    Robust to re-encoding, resizing and mild colour change, unlike a content hash.
    Pixels outside ``region`` are set to the region's mean first, so a crop's padding
    does not make every tight headshot hash alike.
    """
    picture = gray.astype(np.float32)
    if region is not None and region.any() and not region.all():
        picture = np.where(region, picture, picture[region].mean())
    small = cv2.resize(picture, (_HASH_SIDE, _HASH_SIDE), interpolation=cv2.INTER_AREA)
    low = cv2.dct(small)[:8, :8].flatten()
    bits = low > np.median(low[1:])  # the DC term would dominate the median
    return f"{int(''.join('1' if b else '0' for b in bits), 2):016x}"


def hamming(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


def photo_match(
    a: np.ndarray,
    b: np.ndarray,
    valid_a: np.ndarray,
    valid_b: np.ndarray,
    centres: tuple[tuple[float, float], tuple[float, float]] | None = None,
) -> float:
    """The correlation (-1..1) left after registering ``b`` onto ``a``, mirrored or not.

    ``centres``: the face's centre in each crop, where detect moved a square to stay in
    its photo (up to the margin); the registration starts from that offset, as ECC only
    converges from a few pixels away. 0.0 when the two share too little picture to
    judge; ~1 means the same photo.
    """
    (ax, ay), (bx, by) = centres or ((0.0, 0.0), (0.0, 0.0))
    direct = _registered_correlation(a, b, valid_a, valid_b, (bx - ax, by - ay))
    if direct >= 0.99:
        return direct
    width = b.shape[1] - 1
    offset = ((width - bx) - (width - ax) if centres else 0.0, by - ay)
    mirrored = _registered_correlation(a, b[:, ::-1], valid_a, valid_b[:, ::-1], offset)
    return max(direct, mirrored)


def _registered_correlation(
    a: np.ndarray,
    b: np.ndarray,
    valid_a: np.ndarray,
    valid_b: np.ndarray,
    offset: tuple[float, float],
) -> float:
    """ECC of ``b`` onto ``a`` from a start of x_b = x_a + offset, over what both show."""
    size = valid_b.shape[::-1]
    shift = np.float32([[1, 0, offset[0]], [0, 1, offset[1]]])
    a_seen_from_b = cv2.warpAffine(valid_a.astype(np.uint8), shift, size)
    shared_b = cv2.erode(valid_b.astype(np.uint8) & a_seen_from_b, _ERODE)
    if shared_b.sum() < _MIN_SHARED * shared_b.size:
        return 0.0
    shared_a = cv2.warpAffine(shared_b, shift, size, flags=cv2.WARP_INVERSE_MAP).astype(bool)
    template = a.astype(np.float32)
    moving = _match_tones(b.astype(np.float32), b[shared_b.astype(bool)], a[shared_a])
    try:
        correlation, warp = cv2.findTransformECC(
            template, moving, shift.copy(), cv2.MOTION_AFFINE, _ECC_CRITERIA, shared_b, 5
        )
    except cv2.error:  # did not converge: nothing lines up, so not the same photo
        return -1.0
    return float(correlation) if _plausible(warp, shift, a.shape[0]) else -1.0


def _plausible(warp: np.ndarray, start: np.ndarray, size: int) -> bool:
    """Both crops are already aligned on the face, so a real match needs only a small move.

    An affine ECC can also collapse onto a degenerate map (a few pixels stretched over the
    whole crop) whose correlation is ~1 for any two pictures; such a map is no match.
    """
    singular = np.linalg.svd(warp[:, :2], compute_uv=False)
    drift = np.abs(warp[:, 2] - start[:, 2]).max()
    return bool(
        np.linalg.det(warp[:, :2]) > 0
        and singular.min() >= _MIN_SCALE
        and singular.max() <= 1 / _MIN_SCALE
        and drift <= _MAX_DRIFT * size
    )


def _match_tones(image: np.ndarray, own: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Map ``image``'s grey levels so the quantiles of ``own`` (its shared pixels) become
    those of ``other`` (the other crop's shared pixels).

    ECC's correlation already ignores brightness and contrast; this also undoes gamma and
    clipped brightening, which a linear model cannot.
    """
    levels = np.linspace(0, 100, 33)
    source = np.percentile(own, levels) + np.arange(len(levels)) * 1e-6  # strictly rising
    target = np.percentile(other, levels)
    return np.interp(image, np.maximum.accumulate(source), target).astype(np.float32)


class Likeness:
    """Which pairs of crops show the same photo; pixels are read only for pairs worth it.

    A pair is a *candidate* when its hashes are within ``near_hamming`` bits or, with
    embeddings, its faces within ``duplicate_distance``; a candidate's two crops are decoded
    (each once) and registered, and correlating at least ``same_photo`` makes them one photo.
    """

    def __init__(
        self, near_hamming: int, duplicate_distance: float, same_photo: float,
        vectors: Embeddings | None = None,
    ) -> None:  # fmt: skip
        self.near_hamming, self.duplicate_distance = near_hamming, duplicate_distance
        self.threshold, self.vectors = same_photo, vectors
        self._pictures: dict[str, Picture | None] = {}
        self._verdicts: dict[tuple[str, str], bool] = {}

    def distance(self, a: FaceRow, b: FaceRow) -> float:
        """Euclidean distance of the two faces' embeddings (inf without them)."""
        va = self.vectors.get(a.sha256) if self.vectors else None
        vb = self.vectors.get(b.sha256) if self.vectors else None
        if va is None or vb is None:
            return float("inf")
        return float(np.linalg.norm(va.astype(np.float64) - vb))

    def candidate(self, a: FaceRow, b: FaceRow) -> bool:
        if hamming(a.phash, b.phash) <= self.near_hamming:
            return True
        return self.distance(a, b) <= self.duplicate_distance

    def same_photo(self, a: FaceRow, b: FaceRow) -> bool:
        if not self.candidate(a, b):
            return False
        key = (a.path, b.path) if a.path < b.path else (b.path, a.path)
        if key not in self._verdicts:
            first, second = self.picture(a), self.picture(b)
            score = first.match(second) if first and second else -1.0
            self._verdicts[key] = score >= self.threshold
        return self._verdicts[key]

    def near_duplicate(self, a: FaceRow, b: FaceRow) -> bool:
        """The same photo, framed alike (close hashes) and, with embeddings, the same face.

        A perceptual hash alone also matches different photos that merely look alike
        (the same person in the same pose and light), hence the pixel check.
        """
        if hamming(a.phash, b.phash) > self.near_hamming:
            return False
        if self.vectors is not None and self.distance(a, b) > self.duplicate_distance:
            return False
        return self.same_photo(a, b)

    def picture(self, row: FaceRow) -> Picture | None:
        """The row's crop, decoded once; None when it cannot be read (never the same photo)."""
        if row.path not in self._pictures:
            try:
                rgb = load_rgb(Path(row.path), MAX_PIXELS)
            except ImageError:
                self._pictures[row.path] = None
            else:
                self._pictures[row.path] = Picture.of_row(rgb, row)
        return self._pictures[row.path]
