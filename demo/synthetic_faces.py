"""Synthetic faces and the photos they are pasted into, for `prep sample-data`.

A DCGAN (gan-face-generate, trained on the synthetic DigiFace1M faces) turns a 100-d latent
vector into a 64x64 face; one latent per class, plus small jitter per photo, gives a
consistent identity. A photo is a generated, face-free background with the face varied in
pose and light, upscaled to a realistic size, blended in, and sensor grain on top.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import cv2
import numpy as np
import torch

from pipeline.core.errors import UserError

LATENT = 100


@cache
def load_generator() -> torch.nn.Module:
    """The DCGAN generator (64x64 RGB faces from a 100-d latent), on the CPU."""
    try:
        import gan_face_generate
        from gan_face_generate.models import Generator
    except ImportError:
        raise UserError(
            "sample-data needs the synthetic face generator: "
            "pip install --no-deps gan-face-generate==1.1.1"
        ) from None
    weights = Path(gan_face_generate.__file__).parent / "weights.tar"
    state = torch.load(weights, map_location="cpu", weights_only=True)["netG_state_dict"]
    generator = Generator(0, 3, LATENT, 64)
    generator.load_state_dict(state)
    return generator.eval()


def render_face(latent: np.ndarray) -> np.ndarray:
    """A 64x64 RGB uint8 face for one latent vector.

    Bit-identical on re-runs on the same machine: run() fixes torch to one thread,
    so the float32 sums are always done in the same order.
    """
    z = torch.from_numpy(np.asarray(latent, dtype=np.float32)).reshape(1, LATENT, 1, 1)
    with torch.inference_mode():
        out = load_generator()(z)[0].permute(1, 2, 0).numpy()
    return np.clip(np.round((out + 1.0) * 127.5), 0, 255).astype(np.uint8)


def photo_sizes(width: int, height: int) -> list[tuple[int, int]]:
    """Several (w, h) around the configured size: landscape, portrait, bigger, smaller, square."""

    def even(w: float, h: float) -> tuple[int, int]:
        return (int(round(w / 8) * 8), int(round(h / 8) * 8))

    sizes = [
        even(width, height), even(height, width), even(width * 1.25, height * 1.25),
        even(width * 0.8, height * 0.8), even(height, height), even(width * 1.125, width * 0.75),
    ]  # fmt: skip
    return list(dict.fromkeys(sizes))


def background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A plausible, face-free backdrop: a colour gradient, soft blotches and a few shapes.

    Gradient, blotches and desaturation are all smooth, so they are computed on a
    coarse grid and upscaled once: the same picture at a fraction of the cost.
    """
    c1, c2 = rng.uniform(40, 220, 3), rng.uniform(40, 220, 3)
    angle = rng.uniform(0, 2 * np.pi)
    gh, gw = max(2, height // 90), max(2, width // 90)
    # grid cell centres in full-size pixels, as cv2.resize maps them
    ys = (np.arange(gh) + 0.5) * height / gh - 0.5
    xs = (np.arange(gw) + 0.5) * width / gw - 0.5
    t = np.add.outer(ys * np.sin(angle), xs * np.cos(angle))
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    field = c1 + (c2 - c1) * t[..., None]
    field += rng.normal(0, 14, (gh, gw, 1)) + rng.normal(0, 5, (gh, gw, 3))
    grey = field.mean(axis=2, keepdims=True)
    field = (grey + 0.6 * (field - grey)).astype(np.float32)  # muted, like real scenes
    big = cv2.resize(field, (width, height), interpolation=cv2.INTER_CUBIC)
    img = np.clip(big, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(3, 9))):
        img = _shape(rng, img)
    return cv2.GaussianBlur(img, (0, 0), 1.5)


def _shape(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    colour = tuple(int(v) for v in rng.uniform(20, 235, 3))
    overlay = img.copy()
    kind = int(rng.integers(0, 3))
    p = [int(v) for v in rng.integers(0, [w, h, w, h])]
    if kind == 0:
        cv2.rectangle(overlay, (p[0], p[1]), (p[2], p[3]), colour, -1)
    elif kind == 1:
        radius = int(rng.integers(10, max(11, h // 3)))
        cv2.circle(overlay, (p[0], p[1]), radius, colour, -1, cv2.LINE_AA)
    else:
        cv2.line(overlay, (p[0], p[1]), (p[2], p[3]), colour, int(rng.integers(2, 12)), cv2.LINE_AA)
    alpha = float(rng.uniform(0.3, 0.8))
    return cv2.addWeighted(overlay, alpha, img, 1 - alpha, 0)


def _soft_mask(size: int, power: float, feather: float) -> np.ndarray:
    """1 in the middle, fading to 0 at the edges of a rounded square: no hard paste seam."""
    ramp = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    radius = (np.abs(ramp[None, :]) ** power + np.abs(ramp[:, None]) ** power) ** (1 / power)
    return np.clip((1.0 - radius) / feather, 0.0, 1.0)[..., None]


def paste(
    img: np.ndarray,
    face: np.ndarray,
    size: int,
    x: int,
    y: int,
    shape: tuple[float, float] = (4.0, 0.22),
) -> None:
    """Upscale the 64x64 face to ``size`` (bicubic) and blend it in at (x, y), in place.

    ``shape`` is the blend mask's (superellipse power, feather width).
    """
    big = cv2.resize(face, (size, size), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    mask = _soft_mask(size, *shape)
    region = img[y : y + size, x : x + size].astype(np.float32)
    img[y : y + size, x : x + size] = np.clip(np.round(big * mask + region * (1 - mask)), 0, 255)


def vary_face(rng: np.random.Generator, face: np.ndarray) -> np.ndarray:
    """Pose and light that differ from photo to photo, as in real photo sets.

    Without this, aligned crops of one identity look alike to a perceptual hash
    (some distinct photos came within 4 of 64 bits), and clean would take them
    for near-duplicates. A mirror image, a small head tilt, side light and
    exposure change the picture, not who it is.
    """
    if rng.random() < 0.5:
        face = face[:, ::-1]
    turn = cv2.getRotationMatrix2D((31.5, 31.5), float(rng.uniform(-10, 10)), 1.0)
    face = cv2.warpAffine(
        face, turn, (64, 64), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101
    )
    ramp = np.linspace(-1.0, 1.0, 64, dtype=np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    light = 1.0 + rng.uniform(0.1, 0.35) * np.add.outer(ramp * np.sin(angle), ramp * np.cos(angle))
    lit = 255.0 * (face.astype(np.float32) / 255.0) ** rng.uniform(0.8, 1.25) * light[..., None]
    return np.clip(np.round(lit), 0, 255).astype(np.uint8)


def blend_shape(rng: np.random.Generator) -> tuple[float, float]:
    """A blend mask (power, feather) for one paste: rounder or squarer, softer or sharper."""
    return (round(float(rng.uniform(2.5, 5.0)), 2), round(float(rng.uniform(0.15, 0.35)), 2))


def sensor_noise(rng: np.random.Generator, img: np.ndarray, sigma: float = 2.5) -> np.ndarray:
    """Fine Gaussian grain over the whole photo, as a camera sensor adds."""
    noisy = rng.standard_normal(img.shape, dtype=np.float32)
    noisy *= np.float32(sigma)
    noisy += img
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
