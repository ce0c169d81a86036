"""Landmark warp: the landmarks of the result move the way the expression says."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data

from pipeline import warp
from pipeline.config import load_params
from pipeline.errors import UserError
from pipeline.generators import Job
from pipeline.generators.warp import WarpGenerator

MOUTH_CORNERS = [48, 54]
BROWS = list(range(17, 27))


@pytest.fixture(scope="module")
def astronaut() -> tuple[np.ndarray, np.ndarray]:
    """scikit-image's astronaut photo (one frontal face) and its 68 landmarks."""
    rgb = data.astronaut()
    points, how = warp.find_landmarks(rgb)
    assert how == "detected"
    return rgb, points


def _redetected(rgb: np.ndarray, expression: str, intensity: float = 1.0) -> np.ndarray:
    result = warp.warp_expression(rgb, expression, intensity)
    return warp.find_landmarks(result.image)[0]


def test_smile_moves_mouth_corners_up_and_out(astronaut: tuple[np.ndarray, np.ndarray]) -> None:
    rgb, before = astronaut
    after = _redetected(rgb, "smile")
    rise = before[MOUTH_CORNERS, 1] - after[MOUTH_CORNERS, 1]  # image y grows downwards
    assert (rise >= 2).all(), rise
    width = np.ptp(before[MOUTH_CORNERS, 0]), np.ptp(after[MOUTH_CORNERS, 0])
    assert width[1] >= width[0] + 2, width


def test_frown_moves_mouth_corners_down(astronaut: tuple[np.ndarray, np.ndarray]) -> None:
    rgb, before = astronaut
    after = _redetected(rgb, "frown")
    assert (after[MOUTH_CORNERS, 1] - before[MOUTH_CORNERS, 1] >= 2).all()


def test_surprise_raises_the_brows(astronaut: tuple[np.ndarray, np.ndarray]) -> None:
    rgb, before = astronaut
    after = _redetected(rgb, "surprise")
    assert before[BROWS, 1].mean() - after[BROWS, 1].mean() >= 2.5
    assert abs(after[MOUTH_CORNERS, 1] - before[MOUTH_CORNERS, 1]).max() <= 2  # corners stay


def test_displacement_follows_a_tilted_face(astronaut: tuple[np.ndarray, np.ndarray]) -> None:
    """'Up' is the face's own up: on a face turned 90 degrees it points along image x."""
    _, points = astronaut
    turned = np.stack([points[:, 1], -points[:, 0]], axis=1)  # rotate the landmarks 90 degrees
    moved = warp.move_landmarks(turned, "smile", 1.0) - turned
    assert np.abs(moved[MOUTH_CORNERS, 0]).min() > np.abs(moved[MOUTH_CORNERS, 1]).min()


def test_thin_plate_spline_interpolates_and_pins_the_border() -> None:
    src = np.array([[20.0, 20.0], [40.0, 25.0], [30.0, 45.0]])
    dst = src + np.array([[3.0, -2.0], [0.0, 0.0], [-1.0, 2.0]])
    mapping = warp.thin_plate_spline(src, dst, (64, 64))
    for (sx, sy), (dx, dy) in zip(src, dst, strict=True):
        # The output pixel at dst shows the input pixel at src (to a grid-step's error).
        assert np.allclose(mapping[int(dy), int(dx)], (sx, sy), atol=0.3)
    assert np.allclose(mapping[0, 0], (0, 0), atol=0.05)
    assert np.allclose(mapping[63, 63], (63, 63), atol=0.05)
    identity = warp.thin_plate_spline(src, src, (64, 64))
    grid = np.stack(np.meshgrid(np.arange(64), np.arange(64)), axis=-1)
    assert np.abs(identity - grid).max() < 1e-3


def test_unknown_expression_is_refused(astronaut: tuple[np.ndarray, np.ndarray]) -> None:
    with pytest.raises(UserError, match="no expression 'wink'"):
        warp.move_landmarks(astronaut[1], "wink", 1.0)
    params = load_params(overrides={"generate.expressions": ["smile", "wink"]}).generate
    with pytest.raises(UserError, match=r"cannot make expression.*wink"):
        WarpGenerator(params)


def test_small_aligned_crop_falls_back_to_the_crop_geometry(
    astronaut: tuple[np.ndarray, np.ndarray],
) -> None:
    """HOG misses faces under ~80 px; the crop from detect still has the face in its middle."""
    rgb, points = astronaut
    x0, y0 = points.min(axis=0)
    x1, y1 = points.max(axis=0)
    side = max(x1 - x0, y1 - y0) * 1.4
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    crop = rgb[int(cy - side / 2) : int(cy + side / 2), int(cx - side / 2) : int(cx + side / 2)]
    tiny = np.ascontiguousarray(crop[::4, ::4])  # about 33 px: below HOG's reach, even upsampled
    found, how = warp.find_landmarks(tiny)
    assert how == "assumed"
    width = tiny.shape[1]
    assert (found[:, 0] > 0).all() and (found[:, 0] < width).all()
    eyes_y, mouth_y = found[36:48, 1].mean(), found[48:68, 1].mean()
    assert eyes_y < mouth_y  # a face the right way up, roughly where it is


def test_backend_is_deterministic_per_seed(astronaut: tuple[np.ndarray, np.ndarray]) -> None:
    rgb = np.ascontiguousarray(astronaut[0][0:260, 100:330])
    params = load_params(overrides={"generate.warp_jitter": 0.5}).generate
    first = WarpGenerator(params).generate([Job(rgb, "smile", 7, "a"), Job(rgb, "smile", 8, "a")])
    again = WarpGenerator(params).generate([Job(rgb, "smile", 7, "a")])
    assert first[0].image is not None and again[0].image is not None
    assert first[0].image.tobytes() == again[0].image.tobytes()
    assert first[0].applied == again[0].applied
    assert first[0].applied["intensity"] != first[1].applied["intensity"]
    assert 0.5 <= first[0].applied["intensity"] <= 1.5
