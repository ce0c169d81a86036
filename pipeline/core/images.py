"""Decoding photos as they come from the wild, and encoding outputs.

``load_rgb`` turns anything PIL can open into an upright 8-bit RGB array, or
raises ``ImageError`` with a machine-readable reason: EXIF orientation applied,
CMYK / palette / grayscale / 16-bit converted, alpha composited on white, and
images over ``max_pixels`` refused before their pixels are decoded.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import simplejpeg
from PIL import Image, ImageOps, UnidentifiedImageError

from pipeline.core.rows import Reason

# We enforce our own, configurable limit before decoding; PIL's global one would
# fire on a different number and with a different error type.
Image.MAX_IMAGE_PIXELS = None

# The largest image read anywhere but detect, whose raw photos have `detect.max_pixels`:
# crops, augmented copies and user folders are far below it; it only stops a bomb.
MAX_PIXELS = 40_000_000


@dataclass(frozen=True)
class Decoded:
    rgb: np.ndarray  # upright H x W x 3 uint8
    plain_jpeg: bool  # a plain RGB JPEG (no EXIF turn): its bytes are this very picture


class ImageError(Exception):
    """An input image that cannot be used; ``reason`` goes into the rejects manifest."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def load_rgb(path: Path, max_pixels: int) -> np.ndarray:
    """An upright HxWx3 uint8 RGB array from ``path``."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ImageError(Reason.UNREADABLE, f"cannot read file: {err}") from None
    return decode_rgb(data, max_pixels, name=path.name)


def decode_rgb(data: bytes, max_pixels: int, name: str = "<bytes>") -> np.ndarray:
    return decode(data, max_pixels, name).rgb


def decode(data: bytes, max_pixels: int, name: str = "<bytes>") -> Decoded:
    """Decode once: plain JPEGs with simplejpeg (the same pixels as PIL, a third of the
    time), anything else (corrupt files included) with PIL's exact conversions."""
    if _plain_jpeg_header(data):
        try:
            height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
            if colorspace == "YCbCr" and height * width <= max_pixels:
                return Decoded(simplejpeg.decode_jpeg(data, colorspace="RGB"), True)
        except ValueError:
            pass  # truncated or odd: the careful path finds the reason
    return Decoded(_decode_with_pil(data, max_pixels, name), False)


def _plain_jpeg_header(data: bytes) -> bool:
    """True for a JPEG whose header segments hold no EXIF, up to the image data."""
    if data[:2] != b"\xff\xd8":
        return False
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xDA:  # start of scan: the headers are over
            return True
        if marker == 0xE1 and data[pos + 4 : pos + 10] == b"Exif\x00\x00":
            return False
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return False  # malformed or unusual: the careful path decides


def _decode_with_pil(data: bytes, max_pixels: int, name: str) -> np.ndarray:
    if not data:
        raise ImageError(Reason.UNREADABLE, "empty file (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError(Reason.UNREADABLE, f"{name} is not an image PIL can identify") from None
    except (OSError, ValueError, SyntaxError) as err:
        raise ImageError(Reason.UNREADABLE, f"{name}: {err}") from None
    width, height = image.size
    if width * height > max_pixels:
        raise ImageError(
            Reason.TOO_LARGE,
            f"{width}x{height} = {width * height:,} pixels exceeds the limit of {max_pixels:,} "
            "(possible decompression bomb)",
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. PIL's 'Truncated File Read'; we raise instead
            image.load()
            image = ImageOps.exif_transpose(image)
            return _to_rgb8(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise ImageError(Reason.UNREADABLE, f"{name} cannot be decoded: {err}") from None


def _to_rgb8(image: Image.Image) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        wide = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if wide.max(initial=0) > 255 else 255.0
        gray = np.clip(wide * (255.0 / peak), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if image.mode == "F":
        gray = np.clip(np.asarray(image, dtype=np.float64), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        image = image.convert("RGBA")
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, image)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8).copy()


def encode_jpeg(rgb: np.ndarray, quality: int) -> bytes:
    """Deterministic JPEG bytes for an RGB array (same pixels -> same bytes)."""
    ok, buffer = cv2.imencode(
        ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:
        raise ImageError(Reason.ENCODE_FAILED, f"could not encode a {rgb.shape} image as JPEG")
    return buffer.tobytes()


def encode_png(rgb: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ImageError(Reason.ENCODE_FAILED, f"could not encode a {rgb.shape} image as PNG")
    return buffer.tobytes()
