"""PhotoMaker: photos of the synthetic identities, each checked with the pipeline's MTCNN.

A photo is redrawn from the next derived seed until the detector sees in it what its
ground truth says (one sure face, no face, a tiny face...), so the truth holds for any
seed rather than by luck.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from demo.synthetic_faces import (
    LATENT,
    background,
    blend_shape,
    paste,
    photo_sizes,
    render_face,
    sensor_noise,
    vary_face,
)
from pipeline.components.detectors import Face, FaceDetector, MtcnnDetector
from pipeline.core.config import SampleDataParams
from pipeline.core.images import decode_rgb, encode_jpeg
from pipeline.core.seeds import derive_seed

JITTER = 0.3  # latent noise per photo: same identity, different expression and lighting
FACE_PX = (120, 260)  # pasted face size range (source pixels)
JPEG_QUALITY = 90
SURE = 0.99  # a face must score this in the check; the pipeline's min_prob is lower
MAX_ATTEMPTS = 40


class CheckFailedError(Exception):
    """A rendered photo failed its detector check; the caller redraws it."""


class PhotoMaker:
    """Renders photos of the synthetic identities and checks them with MTCNN."""

    def __init__(self, params: SampleDataParams, seed: int) -> None:
        self.params = params
        self.seed = seed
        self.sizes = photo_sizes(*params.photo_size)
        # min_face_size 40 is the pipeline's default min_face_px and twice as fast as 20;
        # the fine detector (20, as in the pipeline) checks tiny faces and empty photos.
        self.coarse: FaceDetector = MtcnnDetector("cpu", max_side=4096, min_face_size=40)
        self.fine: FaceDetector = MtcnnDetector("cpu", max_side=4096, min_face_size=20)
        self.identities = [self._identity(c) for c in range(params.classes)]

    def _identity(self, c: int) -> np.ndarray:
        """A class latent whose faces are detected confidently (some latents are profiles)."""
        for attempt in range(MAX_ATTEMPTS):
            rng = np.random.default_rng(derive_seed(self.seed, f"identity/{c}", attempt))
            z0 = rng.standard_normal(LATENT)
            probes = [z0] + [z0 + JITTER * rng.standard_normal(LATENT) for _ in range(2)]
            canvases = [self._on_grey(render_face(z)) for z in probes]
            found = self.coarse.detect_batch(canvases)
            if all(len(f) == 1 and f[0].prob >= SURE for f in found):
                return z0
        raise RuntimeError(f"no detectable identity for class {c} in {MAX_ATTEMPTS} draws")

    @staticmethod
    def _on_grey(face: np.ndarray) -> np.ndarray:
        canvas = np.full((320, 320, 3), 128, dtype=np.uint8)
        paste(canvas, face, 200, 60, 60)
        return canvas

    def attempts(self, key: str, make: Callable[[np.random.Generator], bytes]) -> bytes:
        """``make`` with a fresh derived RNG until its check passes (deterministic)."""
        for attempt in range(MAX_ATTEMPTS):
            try:
                return make(np.random.default_rng(derive_seed(self.seed, key, attempt)))
            except CheckFailedError:
                continue
        raise RuntimeError(f"could not render {key} in {MAX_ATTEMPTS} attempts")

    def face(self, rng: np.random.Generator, c: int) -> np.ndarray:
        return vary_face(
            rng, render_face(self.identities[c] + JITTER * rng.standard_normal(LATENT))
        )

    def canvas(self, rng: np.random.Generator, landscape: bool = False) -> np.ndarray:
        sizes = [s for s in self.sizes if s[0] > s[1]] if landscape else self.sizes
        width, height = sizes[int(rng.integers(len(sizes)))]
        return background(rng, width, height)

    def portrait(
        self, rng: np.random.Generator, c: int, px: tuple[int, int] = FACE_PX
    ) -> np.ndarray:
        """One face of identity ``c`` at a random size and place on a fresh background."""
        img = self.canvas(rng)
        h, w = img.shape[:2]
        size = min(int(rng.integers(px[0], px[1] + 1)), min(h, w) - 16)
        x, y = int(rng.integers(0, w - size)), int(rng.integers(0, h - size))
        paste(img, self.face(rng, c), size, x, y, blend_shape(rng))
        return sensor_noise(rng, img)

    def detection_shift(self, data: bytes, edit: Callable[[bytes], bytes]) -> float:
        """How far the face moves (box and landmarks, share of face width) after ``edit``.

        ``edit`` may resize the photo; coordinates are compared in the original's pixels.
        """
        before, after = decode_rgb(data, 1 << 30), decode_rgb(edit(data), 1 << 30)
        found = self.fine.detect_batch([before, after])
        if len(found[0]) != 1 or len(found[1]) != 1:
            return float("inf")
        scale = np.array([before.shape[1] / after.shape[1], before.shape[0] / after.shape[0]])
        a, b = found[0][0], found[1][0]
        boxes = np.abs(np.reshape(a.box, (2, 2)) - np.reshape(b.box, (2, 2)) * scale)
        points = np.abs(np.array(a.landmarks) - np.array(b.landmarks) * scale)
        return float(max(boxes.max(), points.max()) / max(a.width, 1.0))

    def check_one_face(self, data: bytes, min_side: float = 60.0) -> list[Face]:
        """Decode as the pipeline will, then require one sure face and nothing else."""
        faces = self.coarse.detect_batch([decode_rgb(data, 1 << 30)])[0]
        if len(faces) != 1 or faces[0].prob < SURE or faces[0].short_side < min_side:
            raise CheckFailedError
        return faces

    def clean_jpeg(self, c: int, key: str) -> bytes:
        def make(rng: np.random.Generator) -> bytes:
            data = encode_jpeg(self.portrait(rng, c), JPEG_QUALITY)
            self.check_one_face(data)
            return data

        return self.attempts(key, make)
