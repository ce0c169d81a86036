"""Thin-plate splines: a smooth map of the whole image that takes chosen points to others.

Used to warp a face so that moved landmarks carry every pixel along; ``least_area_ratio``
tells whether a map folds the image over.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy.spatial.distance import cdist

_GRID_STEP = 2  # the spline is evaluated every other pixel, then interpolated


def thin_plate_spline(src: np.ndarray, dst: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A (H, W, 2) float32 map for cv2.remap: output pixel -> the input pixel it shows.

    The spline is fitted from ``dst`` to ``src`` (backward mapping), so the pixel at
    ``src[i]`` lands on ``dst[i]``. It is evaluated on a coarse grid and resized,
    which is exact to a fraction of a pixel for such smooth fields and much faster.
    """
    height, width = shape
    anchors = _border_anchors(width, height)
    controls = np.vstack([dst, anchors])
    weights = _tps_fit(controls, np.vstack([src, anchors]))
    # Sample where cv2.resize puts its source pixels, so the upsampling adds no shift, and
    # interpolate only the displacement, which is smooth and zero on the border.
    cols, rows = -(-width // _GRID_STEP), -(-height // _GRID_STEP)
    gx = (np.arange(cols) + 0.5) * (width / cols) - 0.5
    gy = (np.arange(rows) + 0.5) * (height / rows) - 0.5
    grid = np.stack(np.meshgrid(gx, gy), axis=-1).reshape(-1, 2)
    shift = (_tps_eval(grid, controls, weights) - grid).reshape(rows, cols, 2)
    fine = cv2.resize(shift.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    return fine + np.stack([xs, ys], axis=-1)


def _border_anchors(width: int, height: int, per_side: int = 5) -> np.ndarray:
    """Fixed points along the image border so that the background stays put."""
    xs = np.linspace(0, width - 1, per_side)
    ys = np.linspace(0, height - 1, per_side)
    top = np.stack([xs, np.zeros_like(xs)], axis=1)
    bottom = np.stack([xs, np.full_like(xs, height - 1)], axis=1)
    left = np.stack([np.zeros_like(ys[1:-1]), ys[1:-1]], axis=1)
    right = np.stack([np.full_like(ys[1:-1], width - 1), ys[1:-1]], axis=1)
    return np.vstack([top, bottom, left, right])


def _tps_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """U(r) = r^2 log r between every point of ``a`` and of ``b`` (0 at r = 0)."""
    d2 = cdist(a, b, "sqeuclidean")
    return 0.5 * d2 * np.log(np.maximum(d2, 1e-12))


def _tps_fit(controls: np.ndarray, targets: np.ndarray) -> np.ndarray:
    n = len(controls)
    system = np.zeros((n + 3, n + 3))
    system[:n, :n] = _tps_kernel(controls, controls)
    system[:n, n] = 1.0
    system[:n, n + 1 :] = controls
    system[n, :n] = 1.0
    system[n + 1 :, :n] = controls.T
    rhs = np.zeros((n + 3, 2))
    rhs[:n] = targets
    try:  # an LU solve: SVD least squares took 4 ms, and 300 ms when BLAS threads contend
        return np.linalg.solve(system, rhs)
    except np.linalg.LinAlgError:  # two control points on one pixel
        return np.linalg.lstsq(system, rhs, rcond=None)[0]


def _tps_eval(points: np.ndarray, controls: np.ndarray, weights: np.ndarray) -> np.ndarray:
    n = len(controls)
    affine = weights[n] + points @ weights[n + 1 :]
    return affine + _tps_kernel(points, controls) @ weights[:n]


def least_area_ratio(mapping: np.ndarray) -> float:
    """The smallest Jacobian determinant of a remap map: the source area an output pixel shows.

    Below 0 the map folds the image over (a feature appears twice, mirrored); near 0 it
    blows a small patch up into a blob.
    """
    dx_dc, dx_dr = np.gradient(mapping[..., 0], axis=(1, 0))
    dy_dc, dy_dr = np.gradient(mapping[..., 1], axis=(1, 0))
    return float((dx_dc * dy_dr - dx_dr * dy_dc).min())
