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

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

Box = tuple[float, float, float, float]

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

    def cells(self) -> dict[str, str]:
        """Manifest cells: ``crop_matrix`` and ``source_size`` (compact JSON)."""
        matrix = [[round(float(v), 6) for v in row] for row in self.matrix]
        return {
            "crop_matrix": json.dumps(matrix, separators=(",", ":")),
            "source_size": json.dumps(list(self.source_size), separators=(",", ":")),
        }


def geometry_from_row(row: Mapping[str, str], size: int) -> CropGeometry | None:
    """The crop's geometry from its manifest row; None for rows that do not record it."""
    if not row.get("crop_matrix") or not row.get("source_size"):
        return None
    matrix = np.asarray(json.loads(row["crop_matrix"]), dtype=np.float64).reshape(2, 3)
    width, height = json.loads(row["source_size"])
    return CropGeometry(matrix, (int(width), int(height)), size)


def face_box_in_crop(row: Mapping[str, str], size: int) -> Box:
    """Where the face is in a crop of ``size`` pixels, from its row (centred if unknown)."""
    geometry = geometry_from_row(row, size)
    if geometry is not None and row.get("box"):
        return geometry.face_box(tuple(json.loads(row["box"])))  # type: ignore[arg-type]
    return centred_box(size, DEFAULT_FACE_FRACTION)


def valid_mask_of(row: Mapping[str, str], size: int) -> np.ndarray:
    """Which pixels of the row's crop show the photo (all of them when not recorded)."""
    geometry = geometry_from_row(row, size)
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
