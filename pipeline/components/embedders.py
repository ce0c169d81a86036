"""Face embedders behind one small interface, registered by name (`prep list embedders`).

An embedder turns face crops (RGB uint8, the detect stage's aligned squares) into
one vector each; faces of one person lie close together, so clean can find the
wrong person in a class and the same face under two names. Vectors are stored by
the crop's sha256 in ``.npz`` files (``save_embeddings`` / ``load_embeddings``),
together with the embedder's ``fingerprint``: a vector is reused only by an
embedder with the same fingerprint (model file and options).

- ``dlib`` (default): dlib's 128-d ResNet (face_recognition_models, CC0), works
  offline. Same person: Euclidean distance below about 0.6.
- ``facenet``: Inception-ResNet-v1 trained on VGGFace2 (facenet-pytorch), 512-d,
  unit length; its weights are downloaded once when the network allows, or read
  from ``embed.weights``.
"""

from __future__ import annotations

import importlib.util
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from pipeline.core.config import EmbedParams
from pipeline.core.crops import Box
from pipeline.core.errors import UserError
from pipeline.core.files import atomic_write_bytes, sha256_file
from pipeline.core.registry import Registry

DLIB_MODEL = "dlib_face_recognition_resnet_model_v1.dat"
DLIB_SHAPE = "shape_predictor_5_face_landmarks.dat"
DLIB_CHIP = 150  # the ResNet's input: a 150x150 chip aligned on 5 landmarks
FACENET_SIZE = 160


class Embedder(Protocol):
    name: str
    dim: int
    fingerprint: str  # model + options; cached vectors are valid only for the same value
    multiprocess: bool  # single-threaded inside: worth one process per core

    def embed(self, crops: Sequence[np.ndarray], boxes: Sequence[Box] | None = None) -> np.ndarray:
        """``(len(crops), dim)`` float32 vectors for RGB uint8 face crops.

        ``boxes``: where the face is in each crop (``pipeline.core.crops.face_box_in_crop``);
        without them the face is taken to be centred.
        """
        ...


EMBEDDERS: Registry[Callable[..., Embedder]] = Registry("embedder")


# ---------------------------------------------------------------------------- dlib


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
def _file_digest(path: Path) -> str:
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


class DlibEmbedder:
    """dlib's face recognition ResNet on 5-landmark-aligned chips of each crop (FaceChipper)."""

    name = "dlib"
    dim = 128
    multiprocess = True  # dlib's CPU network runs on one thread

    def __init__(self, num_jitters: int = 0, face_fraction: float = 0.7) -> None:
        self.chip = FaceChipper(face_fraction)
        import dlib

        models = face_models_dir()
        self._net = dlib.face_recognition_model_v1(str(models / DLIB_MODEL))
        self.num_jitters = num_jitters
        self.face_fraction = face_fraction
        self.fingerprint = (
            f"dlib:{_file_digest(models / DLIB_MODEL)}:{_file_digest(models / DLIB_SHAPE)}"
            f":jitters={num_jitters}:fraction={face_fraction:g}"
        )

    def embed(self, crops: Sequence[np.ndarray], boxes: Sequence[Box] | None = None) -> np.ndarray:
        if not crops:
            return np.zeros((0, self.dim), dtype=np.float32)
        chips = [self.chip(crop, boxes[i] if boxes else None) for i, crop in enumerate(crops)]
        # One call for the whole batch (dlib's list overload); results equal single calls.
        vectors = self._net.compute_face_descriptor(chips, self.num_jitters)
        return np.asarray([np.asarray(v) for v in vectors], dtype=np.float32)

    def embed_one_at_a_time(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """The unbatched path, kept as the baseline the benchmark compares against."""
        vectors = [self._net.compute_face_descriptor(self.chip(c), self.num_jitters) for c in crops]
        return np.asarray([np.asarray(v) for v in vectors], dtype=np.float32).reshape(-1, self.dim)


def build_embedder(params: EmbedParams) -> Embedder:
    """The embedder the ``embed`` section configures (``prep list embedders``)."""
    return EMBEDDERS.get(params.embedder)(params)


@EMBEDDERS.register("dlib", help="dlib ResNet, 128-d (face_recognition_models, CC0; offline)")
def dlib_embedder(params: EmbedParams) -> DlibEmbedder:
    return DlibEmbedder(num_jitters=params.num_jitters, face_fraction=params.face_fraction)


# ---------------------------------------------------------------------------- facenet


class FacenetEmbedder:
    """FaceNet Inception-ResNet-v1 with VGGFace2 weights; outputs are unit length.

    Weights come from ``weights`` (a state_dict file) or facenet-pytorch's own
    cache, downloaded there once when the network allows.
    """

    name = "facenet"
    dim = 512
    multiprocess = False  # torch already uses every core

    def __init__(self, weights: str | None = None, device: str = "cpu", batch_size: int = 32):
        import torch

        from pipeline.components.backbones import build_trunk, get_backbone
        from pipeline.components.classifier import Normalize
        from pipeline.core.devices import resolve_device

        backbone = get_backbone("inception_resnet_v1")
        try:
            trunk, _ = build_trunk(
                backbone, FACENET_SIZE, Path(weights) if weights else None,
                weights_key="embed.weights",
            )  # fmt: skip
        except UserError as err:
            message = f"the facenet embedder needs VGGFace2 weights: {err} {_OFFLINE_HINT}"
            raise UserError(message) from None
        self._torch = torch
        self.device = resolve_device(device)
        self._model = torch.nn.Sequential(Normalize(backbone.mean, backbone.std), trunk)
        self._model.to(self.device).eval()
        self.batch_size = batch_size
        origin = _file_digest(Path(weights)) if weights else "vggface2"
        self.fingerprint = f"facenet:inception_resnet_v1:{origin}"

    def embed(self, crops: Sequence[np.ndarray], boxes: Sequence[Box] | None = None) -> np.ndarray:
        # FaceNet takes the whole aligned crop; its training crops had a margin as ours do.
        out = [np.zeros((0, self.dim), dtype=np.float32)]
        for start in range(0, len(crops), self.batch_size):
            batch = np.stack(
                [_square(c, FACENET_SIZE) for c in crops[start : start + self.batch_size]]
            )
            tensor = self._torch.from_numpy(batch).permute(0, 3, 1, 2).to(self.device)
            with self._torch.inference_mode():
                out.append(self._model(tensor).float().cpu().numpy())
        return np.concatenate(out).astype(np.float32)


_OFFLINE_HINT = "Or use the offline default `embed.embedder: dlib`."


def _square(crop: np.ndarray, size: int) -> np.ndarray:
    if crop.shape[:2] == (size, size):
        return np.ascontiguousarray(crop, dtype=np.uint8)
    shrink = min(crop.shape[:2]) > size
    return cv2.resize(
        crop, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    )


@EMBEDDERS.register(
    "facenet", help="FaceNet Inception-ResNet-v1, VGGFace2, 512-d (download or weights)"
)
def facenet_embedder(params: EmbedParams) -> FacenetEmbedder:
    return FacenetEmbedder(params.weights, params.device, params.batch_size)


# ---------------------------------------------------------------------------- storage


@dataclass(frozen=True)
class Embeddings:
    """Vectors by crop sha256, from one embedder (``fingerprint``)."""

    fingerprint: str
    vectors: dict[str, np.ndarray]

    def get(self, sha256: str) -> np.ndarray | None:
        return self.vectors.get(sha256)

    def __len__(self) -> int:
        return len(self.vectors)


def save_embeddings(path: Path, embeddings: Embeddings) -> None:
    """Write atomically, keys sorted: the same vectors always give the same bytes."""
    keys = sorted(embeddings.vectors)
    dim = len(next(iter(embeddings.vectors.values()))) if keys else 0
    matrix = np.asarray([embeddings.vectors[k] for k in keys], dtype=np.float32).reshape(
        len(keys), dim
    )
    buffer = io.BytesIO()
    np.savez(
        buffer,
        sha256=np.asarray(keys, dtype="U64"),
        vectors=matrix,
        fingerprint=np.asarray(embeddings.fingerprint),
    )
    atomic_write_bytes(path, buffer.getvalue())


def load_embeddings(path: Path) -> Embeddings:
    """Read a file written by ``save_embeddings``; a missing file is a clear error."""
    if not path.is_file():
        raise FileNotFoundError(f"embeddings {path} do not exist: run `prep embed` first")
    try:
        with np.load(path, allow_pickle=False) as data:
            keys, matrix = data["sha256"], data["vectors"]
            fingerprint = str(data["fingerprint"])
    except (OSError, KeyError, ValueError) as err:
        raise UserError(f"{path} is not an embeddings file written by prep embed: {err}") from None
    return Embeddings(fingerprint, {str(k): matrix[i] for i, k in enumerate(keys)})
