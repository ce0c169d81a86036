"""Cutting a detected face out of its photo: one affine map, one warp.

The crop is a square around the face box, enlarged by a margin, turned so the eye line is
level, and moved back inside the photo where it would run past an edge; what is still
outside is padding. detect records the map in its manifest (``crop_matrix``), so later
stages know where the face is (pipeline/core/crops.py).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from pipeline.components.detectors import Face, eye_angle

PADDING = {
    "constant": cv2.BORDER_CONSTANT,  # black
    "reflect": cv2.BORDER_REFLECT_101,
    "replicate": cv2.BORDER_REPLICATE,
}


def crop_matrix(
    face: Face, size: int, margin: float, align: bool, inside: tuple[int, int] | None = None
) -> np.ndarray:
    """The 2x3 affine map from source pixels to a size x size crop.

    The crop is a square of side ``max(w, h) * (1 + 2 * margin)`` centred on the box
    centre; with ``align`` it is turned by the eye-line angle, which is the same as
    rotating the photo about the eye centre until the eyes are level and cropping.
    With ``inside`` = the photo's (width, height), a square that would run past an
    edge is moved back in, by at most the margin, so the face box stays whole in the
    crop: real pixels replace padding (the row's ``crop_matrix`` records the move).
    """
    x1, y1, x2, y2 = face.box
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    side = max(x2 - x1, y2 - y1) * (1 + 2 * margin)
    angle = eye_angle(face) if align else 0.0
    if inside is not None:
        slack = margin * max(x2 - x1, y2 - y1)
        dx, dy = _shift_inside((cx, cy), side, angle, slack, inside)
        cx, cy = cx + dx, cy + dy
    scale = size / max(side, 1e-6)
    cos, sin = math.cos(angle) * scale, math.sin(angle) * scale
    # dst = scale * R(-angle) @ (src - centre) + size / 2
    return np.array(
        [
            [cos, sin, size / 2 - cos * cx - sin * cy],
            [-sin, cos, size / 2 + sin * cx - cos * cy],
        ],
        dtype=np.float64,
    )


def _shift_inside(
    centre: tuple[float, float], side: float, angle: float, slack: float, bounds: tuple[int, int]
) -> tuple[float, float]:
    """The smallest move of a turned square towards covering only the photo, capped at ``slack``.

    Per axis, the square's extent either fits inside the photo (move it in) or exceeds it
    (move it only until it covers the photo's full width: padding cannot shrink further).
    The move is capped in the crop's own frame, where the face box has ``slack`` to spare.
    """
    reach = side / 2 * (abs(math.cos(angle)) + abs(math.sin(angle)))
    move = []
    for value, limit in zip(centre, bounds, strict=True):
        low, high = sorted((reach, limit - reach))
        move.append(min(max(value, low), high) - value)
    cos, sin = math.cos(angle), math.sin(angle)
    u = max(-slack, min(slack, cos * move[0] + sin * move[1]))
    v = max(-slack, min(slack, -sin * move[0] + cos * move[1]))
    return cos * u - sin * v, sin * u + cos * v


def crop_face(image: np.ndarray, matrix: np.ndarray, size: int, padding: str) -> np.ndarray:
    """One affine warp from the photo to the crop; outside the photo, ``padding`` (PADDING)."""
    scale = math.hypot(matrix[0, 0], matrix[0, 1])
    if scale < 0.5:
        image, matrix = _prefilter(image, matrix, scale)
    return cv2.warpAffine(
        image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=PADDING[padding]
    )


def _prefilter(
    image: np.ndarray, matrix: np.ndarray, scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """Area-downscale the photo first when the crop shrinks it more than 2x.

    A single bilinear warp samples only 4 source pixels per output pixel, so a big
    reduction would alias (jagged hair, moire); INTER_AREA averages them all.
    """
    factor = 2.0 * scale  # leaves a 2x reduction for the warp
    height, width = image.shape[:2]
    small_size = (max(1, round(width * factor)), max(1, round(height * factor)))
    small = cv2.resize(image, small_size, interpolation=cv2.INTER_AREA)
    fx, fy = small_size[0] / width, small_size[1] / height
    # src = small / f (pixel centres: (small + 0.5) / f - 0.5), so fold that into the map.
    to_source = np.array([[1 / fx, 0, 0.5 / fx - 0.5], [0, 1 / fy, 0.5 / fy - 0.5], [0, 0, 1]])
    return small, matrix @ to_source
