"""Where a face crop came from: the affine map from its photo, and what that implies.

detect cuts each face out of its photo with one affine warp and records the map
(``crop_matrix``, source pixels -> crop pixels) and the photo's size (``source_size``)
in its manifest. Every later stage can then answer, without the photo:

- where the face is inside the crop (``face_box``), even when the square was shifted
  to stay inside the photo, so a face is not always centred;
- which crop pixels are real photo and which are padding (``valid_mask``), so
  sharpness and pixel comparisons ignore the padding.

Manifests written before these columns existed still work: the face is then taken
to be centred, covering ``1 / (1 + 2 * margin)`` of the crop, and every pixel valid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pipeline.core.rows import Box, FaceRow, ImageRow

DEFAULT_FACE_FRACTION = 1 / 1.4  # a centred face with detect's default margin 0.2


@dataclass(frozen=True)
class CropGeometry:
    """The map from a photo of ``source_size`` (w, h) to a ``size`` x ``size`` crop."""

    matrix: np.ndarray  # 2x3, source pixels -> crop pixels
    source_size: tuple[int, int]
    size: int

    @property
    def scale(self) -> float:
        return math.hypot(self.matrix[0, 0], self.matrix[0, 1])

    def to_crop(self, x: float, y: float) -> tuple[float, float]:
        cx, cy = self.matrix @ np.array([x, y, 1.0])
        return float(cx), float(cy)

    def face_box(self, box: Box) -> Box:
        """The face's box in crop pixels (in the crop's own, aligned frame)."""
        x1, y1, x2, y2 = box
        cx, cy = self.to_crop((x1 + x2) / 2, (y1 + y2) / 2)
        half_w, half_h = (x2 - x1) * self.scale / 2, (y2 - y1) * self.scale / 2
        return (cx - half_w, cy - half_h, cx + half_w, cy + half_h)

    def valid_mask(self) -> np.ndarray:
        """``size`` x ``size`` bool: True where the crop shows the photo, False on padding."""
        inverse = np.linalg.inv(np.vstack([self.matrix, [0.0, 0.0, 1.0]]))[:2]
        centres = np.arange(self.size, dtype=np.float64)
        xs, ys = np.meshgrid(centres, centres)
        src_x = inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2]
        src_y = inverse[1, 0] * xs + inverse[1, 1] * ys + inverse[1, 2]
        width, height = self.source_size
        return (src_x >= -0.5) & (src_x <= width - 0.5) & (src_y >= -0.5) & (src_y <= height - 0.5)

    def then(self, moved: np.ndarray) -> CropGeometry:
        """The map to an image made from this crop by ``moved`` (3x3, crop -> new pixels),
        e.g. an augmentation's flip and turn: the face box and padding follow the pixels."""
        matrix = (moved @ np.vstack([self.matrix, [0.0, 0.0, 1.0]]))[:2]
        return CropGeometry(matrix, self.source_size, self.size)

    def cells(self) -> dict[str, object]:
        """The row fields that record it: ``crop_matrix`` and ``source_size``."""
        matrix = tuple(tuple(round(float(v), 6) for v in row) for row in self.matrix)
        return {"crop_matrix": matrix, "source_size": tuple(self.source_size)}


def geometry_from_row(row: FaceRow, size: int) -> CropGeometry | None:
    """The crop's geometry from its manifest row; None for rows that do not record it."""
    matrix, source_size = getattr(row, "crop_matrix", None), getattr(row, "source_size", None)
    if not matrix or not source_size:
        return None
    width, height = source_size
    return CropGeometry(np.asarray(matrix, dtype=np.float64).reshape(2, 3), (width, height), size)


def face_box_in_crop(row: ImageRow, size: int) -> Box:
    """Where the face is in a crop of ``size`` pixels, from its row (centred if unknown)."""
    geometry = geometry_from_row(row, size)  # type: ignore[arg-type]
    box = getattr(row, "box", None)
    if geometry is not None and box:
        return geometry.face_box(box)
    return centred_box(size, DEFAULT_FACE_FRACTION)


def valid_mask_of(row: ImageRow, size: int) -> np.ndarray:
    """Which pixels of the row's crop show the photo (all of them when not recorded)."""
    geometry = geometry_from_row(row, size)  # type: ignore[arg-type]
    return np.ones((size, size), dtype=bool) if geometry is None else geometry.valid_mask()


def centred_box(size: int, fraction: float) -> Box:
    side = fraction * size
    start = (size - side) / 2
    return (start, start, start + side, start + side)


def outside_fraction(box: Box, width: int, height: int) -> float:
    """Share of ``box``'s area that lies outside a ``width`` x ``height`` image."""
    x1, y1, x2, y2 = box
    area = max(x2 - x1, 0.0) * max(y2 - y1, 0.0)
    if area <= 0:
        return 0.0
    inside_w = max(0.0, min(width, x2) - max(0.0, x1))
    inside_h = max(0.0, min(height, y2) - max(0.0, y1))
    return 1.0 - inside_w * inside_h / area
