import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.core.images import ImageError, decode_rgb, encode_jpeg, load_rgb

BIG = 10_000_000


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def test_exif_orientation_is_applied() -> None:
    upright = np.zeros((40, 20, 3), np.uint8)  # tall
    upright[:10] = 255  # white band at the top
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # stored wide
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 clockwise to display
    rgb = decode_rgb(_encode(stored, "JPEG", exif=exif, quality=95), BIG)
    assert rgb.shape == (40, 20, 3)
    assert rgb[:8].mean() > 200 and rgb[-8:].mean() < 50


@pytest.mark.parametrize(
    "image",
    [
        Image.new("L", (8, 6), 128),
        Image.new("CMYK", (8, 6), (0, 0, 0, 0)),
        Image.new("P", (8, 6), 3),
        Image.new("I;16", (8, 6), 65535),
        Image.new("RGBA", (8, 6), (255, 0, 0, 0)),
    ],
    ids=["gray", "cmyk", "palette", "16bit", "alpha"],
)
def test_odd_modes_become_rgb8(image: Image.Image) -> None:
    fmt = "JPEG" if image.mode in ("L", "CMYK") else "PNG"
    rgb = decode_rgb(_encode(image, fmt), BIG)
    assert rgb.shape == (6, 8, 3) and rgb.dtype == np.uint8


def test_alpha_is_composited_on_white_and_16bit_is_scaled() -> None:
    transparent = decode_rgb(_encode(Image.new("RGBA", (4, 4), (255, 0, 0, 0)), "PNG"), BIG)
    assert transparent.min() == 255
    full = decode_rgb(_encode(Image.new("I;16", (4, 4), 65535), "PNG"), BIG)
    assert full.min() == 255


@pytest.mark.parametrize(
    ("data", "reason"),
    [(b"", "unreadable"), (b"hello, not an image", "unreadable")],
    ids=["zero-byte", "text"],
)
def test_unusable_bytes_raise_with_reason(data: bytes, reason: str) -> None:
    with pytest.raises(ImageError) as err:
        decode_rgb(data, BIG)
    assert err.value.reason == reason


def test_truncated_jpeg_is_unreadable() -> None:
    rng = np.random.default_rng(0)
    data = encode_jpeg(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), 90)
    with pytest.raises(ImageError) as err:
        decode_rgb(data[: len(data) // 2], BIG)
    assert err.value.reason == "unreadable"


def test_decompression_bomb_is_refused_before_decoding() -> None:
    # 20000 x 20000 of one colour compresses to a small PNG; its header gives it away
    bomb = _encode(Image.new("1", (20_000, 20_000)), "PNG")
    assert len(bomb) < 100_000
    with pytest.raises(ImageError) as err:
        decode_rgb(bomb, max_pixels=50_000_000)
    assert err.value.reason == "too_large"
    assert "400,000,000" in err.value.detail


def test_missing_file_is_unreadable(tmp_path: Path) -> None:
    with pytest.raises(ImageError) as err:
        load_rgb(tmp_path / "missing.jpg", BIG)
    assert err.value.reason == "unreadable"


def test_jpeg_encoding_is_deterministic() -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert encode_jpeg(rgb, 90) == encode_jpeg(rgb.copy(), 90)
