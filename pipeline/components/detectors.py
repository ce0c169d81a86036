"""Face detectors behind one small interface, registered by name (`prep list detectors`).

A detector takes RGB uint8 photos of any sizes and returns, per photo, the faces
it found as ``Face`` records in source pixels, largest first. Stages depend on
this interface only, so a new detector is one registered factory away.

The MTCNN detector batches: photos are downscaled to ``max_side``, grouped into
buckets of equal size and detected up to ``max_batch`` photos per call. Measured on
CPU (2 busy shared cores, one torch thread; benchmarks/detect.py), where MTCNN is
compute-bound (pyramid convolutions, resampling, pooling) and batching only saves
per-call overhead:

- 4 photos per call was fastest, 1.07-1.3x one-at-a-time over several runs; 16 per
  call 0.96-1.1x, as the pyramid tensors of a big batch no longer fit in cache.
  Hence ``max_batch`` 4 on CPU; on a GPU, where a call is mostly launch overhead,
  it is 64 (not measured here: no GPU).
- Padding smaller photos onto a shared canvas (``max_waste`` > 0) was slower still
  (0.5-0.75x), and it moves MTCNN's pyramid grid, which shifted boxes by 2-25 px
  against one-at-a-time detection; so it is off by default. With equal-size
  buckets a photo's faces do not depend on what else is in its batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import cv2
import numpy as np
import torch

from pipeline.core.config import DetectParams
from pipeline.core.devices import resolve_device
from pipeline.core.registry import Registry


@dataclass(frozen=True)
class Face:
    """One detected face, in source-image pixels.

    ``landmarks`` are five (x, y) points in MTCNN's order: left eye, right eye,
    nose, mouth left, mouth right ("left" = smaller x in the image); none for the
    ``none`` detector's whole image.
    """

    box: tuple[float, float, float, float]
    landmarks: tuple[tuple[float, float], ...]
    prob: float

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def short_side(self) -> float:
        return min(self.width, self.height)

    @property
    def area(self) -> float:
        return max(0.0, self.width) * max(0.0, self.height)

    def core_box(self) -> tuple[float, float, float, float]:
        """The face's core: the box spanned by its five landmarks, grown by a quarter a side.

        MTCNN's own box reaches from the brows to below the chin, so on a tight headshot
        it runs past the frame while the eyes, nose and mouth are all there (dlib's 150 px
        chips: up to 42% of the box outside). The core is what identity needs: measured,
        0% of it is outside on such headshots, 34-68% on faces cut off at the side.
        Without landmarks (a whole image) the core is the box.
        """
        if not self.landmarks:
            return self.box
        xs = [x for x, _ in self.landmarks]
        ys = [y for _, y in self.landmarks]
        grow_x, grow_y = (max(xs) - min(xs)) / 4, (max(ys) - min(ys)) / 4
        return (min(xs) - grow_x, min(ys) - grow_y, max(xs) + grow_x, max(ys) + grow_y)

    def scaled(self, factor: float) -> Face:
        """The same face with every coordinate multiplied by ``factor``."""
        box = tuple(v * factor for v in self.box)
        points = tuple((x * factor, y * factor) for x, y in self.landmarks)
        return Face(box, points, self.prob)  # type: ignore[arg-type]


class FaceDetector(Protocol):
    device: torch.device
    whole_image: bool  # True: the box is the crop itself (no margin, no turn)

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        """Faces per image (RGB uint8, any mix of sizes), each list largest first."""
        ...


DETECTORS: Registry[Callable[[DetectParams], FaceDetector]] = Registry("detector")


def fit_within(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """Downscale so the longest side is at most ``max_side``: (image, scale applied)."""
    height, width = image.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    if scale >= 1.0:
        return image, 1.0
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    # INTER_AREA averages pixels, so small faces keep their structure when shrunk.
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scale


def plan_buckets(
    shapes: Sequence[tuple[int, int]], max_waste: float = 0.0
) -> list[tuple[tuple[int, int], list[int]]]:
    """Group image shapes (h, w) into canvases: [((H, W), indices), ...].

    Images are taken largest first; each joins the first bucket whose canvas,
    grown to fit it, stays within ``max_waste`` padding over all its members
    (0: equal shapes only). Padding is compute spent on nothing, while each extra
    bucket costs one more pass through the image pyramid; on a GPU, where a pass
    is mostly launch overhead, some padding can pay.
    """
    order = sorted(range(len(shapes)), key=lambda i: (-shapes[i][0] * shapes[i][1], i))
    buckets: list[tuple[tuple[int, int], list[int]]] = []
    for i in order:
        h, w = shapes[i]
        for b, ((bh, bw), members) in enumerate(buckets):
            canvas = (max(bh, h), max(bw, w))
            used = sum(shapes[j][0] * shapes[j][1] for j in members) + h * w
            if 1 - used / ((len(members) + 1) * canvas[0] * canvas[1]) <= max_waste:
                buckets[b] = (canvas, [*members, i])
                break
        else:
            buckets.append(((h, w), [i]))
    return buckets


def pad_to(images: Sequence[np.ndarray], canvas: tuple[int, int]) -> np.ndarray:
    """Stack images on a zero canvas, anchored top-left so coordinates do not move."""
    batch = np.zeros((len(images), canvas[0], canvas[1], 3), dtype=np.uint8)
    for k, image in enumerate(images):
        batch[k, : image.shape[0], : image.shape[1]] = image
    return batch


def faces_from_mtcnn(boxes: Any, probs: Any, points: Any) -> list[Face]:
    """One image's MTCNN output (object arrays, or None when no face) as Faces."""
    if boxes is None or len(boxes) == 0:
        return []
    box_arr = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    prob_arr = np.asarray(probs, dtype=np.float64).reshape(-1)
    point_arr = np.asarray(points, dtype=np.float64).reshape(-1, 5, 2)
    faces = [
        Face(
            tuple(float(v) for v in box),  # type: ignore[arg-type]
            tuple((float(x), float(y)) for x, y in pts),
            float(prob),
        )
        for box, prob, pts in zip(box_arr, prob_arr, point_arr, strict=True)
    ]
    return sorted(faces, key=lambda f: -f.area)


class MtcnnDetector:
    """facenet-pytorch MTCNN with size-bucketed batching; weights ship in the wheel."""

    whole_image = False

    def __init__(
        self,
        device: torch.device | str = "cpu",
        max_side: int = 1024,
        min_face_size: int = 20,
        max_waste: float = 0.0,
        max_batch: int | None = None,
        min_prob: float = 0.7,
    ) -> None:
        try:
            from facenet_pytorch import MTCNN
        except ImportError as err:  # pragma: no cover - a dependency of the package
            raise ImportError(
                "facenet-pytorch is needed for the mtcnn detector: "
                "pip install facenet-pytorch==2.5.3"
            ) from err
        self.device = torch.device(device)
        self.max_side = max_side
        self.min_face_size = min_face_size
        self.max_waste = max_waste
        self.max_batch = max_batch or (4 if self.device.type == "cpu" else 64)
        # keep_all: the stage applies its own multi-face policy to every face found.
        # The last stage's threshold is facenet's 0.7 unless the caller wants fainter faces
        # (detect.presence_prob): a half-seen second person must still count.
        thresholds = [0.6, 0.7, min(0.7, min_prob)]
        self.model = MTCNN(
            keep_all=True, min_face_size=min_face_size, thresholds=thresholds, device=self.device
        )
        self.model.eval()

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        fitted = [fit_within(image, self.max_side) for image in images]
        results: list[list[Face]] = [[] for _ in images]
        # Smaller than the smallest face searched for: MTCNN's pyramid would be empty
        # (facenet then fails on torch.cat of nothing), and no face can be there anyway.
        usable = [
            i for i, (image, _) in enumerate(fitted) if min(image.shape[:2]) >= self.min_face_size
        ]
        shapes = [fitted[i][0].shape[:2] for i in usable]
        for canvas, positions in plan_buckets(shapes, self.max_waste):
            members = [usable[p] for p in positions]
            for start in range(0, len(members), self.max_batch):
                chunk = members[start : start + self.max_batch]
                batch = pad_to([fitted[i][0] for i in chunk], canvas)
                for i, faces in zip(chunk, self._detect_canvas(batch), strict=True):
                    scale = fitted[i][1]
                    results[i] = faces if scale == 1.0 else [f.scaled(1 / scale) for f in faces]
        return results

    def detect_one(self, image: np.ndarray) -> list[Face]:
        """Plain MTCNN on one photo, no bucketing: the baseline batching is measured against."""
        fitted, scale = fit_within(image, self.max_side)
        if min(fitted.shape[:2]) < self.min_face_size:
            return []
        faces = self._detect_canvas(fitted[None])[0]
        return faces if scale == 1.0 else [f.scaled(1 / scale) for f in faces]

    def _detect_canvas(self, batch: np.ndarray) -> list[list[Face]]:
        with torch.inference_mode():
            boxes, probs, points = self.model.detect(batch, landmarks=True)
        return [faces_from_mtcnn(boxes[k], probs[k], points[k]) for k in range(len(batch))]


@DETECTORS.register(
    "mtcnn", help="MTCNN (facenet-pytorch 2.5.3): box, 5 landmarks, probability",
    default_for=("faces",),
)  # fmt: skip
def mtcnn(params: DetectParams) -> MtcnnDetector:
    """The detector the ``detect`` section configures; faces down to presence_prob."""
    device = resolve_device(params.device)
    return MtcnnDetector(device, params.max_side, min_prob=params.presence_prob)


class WholeImage:
    """No detection: each image is one "face" with probability 1, for objects.

    ``letterbox``: the box is the whole image, so its crop is the image padded to a square
    (with detect.padding); ``crop``: the box is the image's centre square. Either way the
    box's shorter side is the image's, which detect.min_face_px then judges (too_small).
    """

    whole_image = True

    def __init__(self, fit: str) -> None:
        self.fit = fit
        self.device = torch.device("cpu")

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        return [[self.box_of(image.shape[1], image.shape[0])] for image in images]

    def box_of(self, width: int, height: int) -> Face:
        if self.fit == "letterbox":
            return Face((0.0, 0.0, float(width), float(height)), (), 1.0)
        side = min(width, height)
        left, top = (width - side) / 2, (height - side) / 2
        return Face((left, top, left + side, top + side), (), 1.0)


@DETECTORS.register(
    "none", help="no detector: the whole image (letterbox or centre crop to detect.size)",
    default_for=("objects",),
)  # fmt: skip
def whole_image(params: DetectParams) -> WholeImage:
    return WholeImage(params.fit)


def build_detector(params: DetectParams) -> FaceDetector:
    """The detector the ``detect`` section configures (auto: the domain's default)."""
    return DETECTORS.get(DETECTORS.resolve(params.detector, params.domain))(params)


def eye_angle(face: Face) -> float:
    """Angle of the eye line in radians (0 = horizontal, y grows downwards); 0 without
    landmarks."""
    if not face.landmarks:
        return 0.0
    (lx, ly), (rx, ry) = face.landmarks[0], face.landmarks[1]
    return math.atan2(ry - ly, rx - lx)


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run torch ops on ``n`` intra-op threads, restoring the previous count afterwards.

    For small, many-call workloads on a shared machine: when other processes load
    the cores, torch's worker threads wait on each other and a 2-thread MTCNN call
    ran about 8x slower than a 1-thread one in our measurements.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(previous)
