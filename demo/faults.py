"""The faults `prep sample-data` injects: each makes one file a stage must reject or keep.

``FAULT_MAKERS[kind](maker, c, other, key)`` returns the file's bytes for class ``c``
(``other`` is another class, for the faults that show a second identity; ``key`` seeds
the attempts). The duplicates are made in sample_data.py, from photos already written.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
from PIL import Image

from demo.photo_maker import JPEG_QUALITY, SURE, CheckFailedError, PhotoMaker
from demo.synthetic_faces import blend_shape, paste, sensor_noise
from pipeline.core.images import decode_rgb, encode_jpeg

TINY_PX = (38, 48)  # pasted size giving a detected box of about 28-34 px


def near_duplicate(data: bytes) -> bytes:
    """The same photo resized to 80% and re-encoded at a lower quality (a re-upload)."""
    rgb = decode_rgb(data, max_pixels=1 << 30)
    h, w = rgb.shape[:2]
    small = cv2.resize(rgb, (round(w * 0.8), round(h * 0.8)), interpolation=cv2.INTER_AREA)
    return encode_jpeg(small, 70)


def _blurred(maker: PhotoMaker, c: int, other: int, key: str) -> bytes:
    """A clearly out-of-focus photo whose face MTCNN still finds (so clean must catch it)."""

    def make(rng: np.random.Generator) -> bytes:
        sharp = maker.portrait(rng, c, (200, 260))
        blurred = cv2.GaussianBlur(sharp, (0, 0), float(rng.uniform(4.0, 5.0)))
        data = encode_jpeg(blurred, JPEG_QUALITY)
        maker.check_one_face(data)
        return data

    return maker.attempts(key, make)


def _no_face(maker: PhotoMaker, c: int, other: int, key: str) -> bytes:
    def make(rng: np.random.Generator) -> bytes:
        data = encode_jpeg(sensor_noise(rng, maker.canvas(rng)), JPEG_QUALITY)
        if maker.fine.detect_batch([decode_rgb(data, 1 << 30)])[0]:
            raise CheckFailedError
        return data

    return maker.attempts(key, make)


def _two_faces(maker: PhotoMaker, c: int, other: int, key: str) -> bytes:
    """This class's face and another class's, of similar size, side by side."""

    def make(rng: np.random.Generator) -> bytes:
        img = maker.canvas(rng, landscape=True)
        h, w = img.shape[:2]
        size = min(int(rng.integers(130, 190)), w // 2 - 24, h - 16)
        for k, identity in enumerate(rng.permutation([c, other])):
            s = int(size * rng.uniform(0.92, 1.0))
            x = int(rng.integers(k * w // 2, (k + 1) * w // 2 - s))
            y = int(rng.integers(0, h - s))
            paste(img, maker.face(rng, int(identity)), s, x, y, blend_shape(rng))
        data = encode_jpeg(sensor_noise(rng, img), JPEG_QUALITY)
        faces = maker.coarse.detect_batch([decode_rgb(data, 1 << 30)])[0]
        sure = [f for f in faces if f.prob >= SURE]
        if len(faces) != 2 or len(sure) != 2 or sure[1].area < 0.65 * sure[0].area:
            raise CheckFailedError
        return data

    return maker.attempts(key, make)


def _tiny_face(maker: PhotoMaker, c: int, other: int, key: str) -> bytes:
    """A face that is found (prob well above min_prob) but about 30 px: too small to use."""

    def make(rng: np.random.Generator) -> bytes:
        data = encode_jpeg(maker.portrait(rng, c, TINY_PX), JPEG_QUALITY)
        faces = maker.fine.detect_batch([decode_rgb(data, 1 << 30)])[0]
        if len(faces) != 1 or faces[0].prob < SURE or not 27 <= faces[0].short_side <= 35:
            raise CheckFailedError
        return data

    return maker.attempts(key, make)


def _other_class_face(maker: PhotoMaker, c: int, other: int, key: str) -> bytes:
    """A normal photo of another identity, filed in this class (a labelling mistake)."""
    return maker.clean_jpeg(other, key)


def _truncated(maker: PhotoMaker, c: int, other: int, key: str) -> bytes:
    """A download cut off half way: the JPEG header is fine, the scan data is not."""
    data = maker.clean_jpeg(c, key)
    return data[: len(data) // 2]


def _zero_byte(maker: PhotoMaker, c: int, other: int, key: str) -> bytes:
    return b""


def _non_image(maker: PhotoMaker, c: int, other: int, key: str) -> bytes:
    return b"<!DOCTYPE html>\n<html><body>403 Forbidden: hotlinking not allowed</body></html>\n"


def _odd_format(
    encode: Callable[[np.ndarray], bytes],
) -> Callable[[PhotoMaker, int, int, str], bytes]:
    """A clean photo stored in an unusual but valid way; checked after decoding it back."""

    def fault(maker: PhotoMaker, c: int, other: int, key: str) -> bytes:
        def make(rng: np.random.Generator) -> bytes:
            data = encode(maker.portrait(rng, c))
            maker.check_one_face(data)
            return data

        return maker.attempts(key, make)

    return fault


def _pil_bytes(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def exif_rotated(rgb: np.ndarray) -> bytes:
    """Pixels stored turned 90 degrees, with EXIF Orientation 6 saying how to turn them back."""
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"; PIL's exif_transpose undoes it
    stored = Image.fromarray(rgb).transpose(Image.Transpose.ROTATE_90)
    return _pil_bytes(stored, "JPEG", quality=JPEG_QUALITY, exif=exif.tobytes())


def grayscale(rgb: np.ndarray) -> bytes:
    return _pil_bytes(Image.fromarray(rgb).convert("L"), "JPEG", quality=JPEG_QUALITY)


def png_alpha(rgb: np.ndarray) -> bytes:
    """RGBA with a transparent border, as cut-out pictures have."""
    alpha = np.zeros(rgb.shape[:2], dtype=np.uint8)
    border = max(4, min(rgb.shape[:2]) // 20)
    alpha[border:-border, border:-border] = 255
    return _pil_bytes(Image.fromarray(np.dstack([rgb, alpha]), "RGBA"), "PNG")


def cmyk(rgb: np.ndarray) -> bytes:
    return _pil_bytes(Image.fromarray(rgb).convert("CMYK"), "JPEG", quality=JPEG_QUALITY)


def png16(rgb: np.ndarray) -> bytes:
    """16-bit grayscale PNG (scanners, scientific cameras)."""
    gray = np.asarray(Image.fromarray(rgb).convert("L"), dtype=np.uint16) * 257
    return _pil_bytes(Image.fromarray(gray), "PNG")


FAULT_MAKERS: dict[str, Callable[[PhotoMaker, int, int, str], bytes]] = {
    "blurred": _blurred,
    "no_face": _no_face,
    "two_faces": _two_faces,
    "tiny_face": _tiny_face,
    "other_class_face": _other_class_face,
    "truncated": _truncated,
    "zero_byte": _zero_byte,
    "non_image": _non_image,
    "exif_rotated": _odd_format(exif_rotated),
    "grayscale": _odd_format(grayscale),
    "png_alpha": _odd_format(png_alpha),
    "cmyk": _odd_format(cmyk),
    "png16": _odd_format(png16),
}
