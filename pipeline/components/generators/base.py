"""The interface every generative backend implements, and what they share.

A backend is a ``Backend`` subclass, registered in ``GENERATORS`` by its name. It is
built once from the ``generate`` params, of which it reads the shared keys
(expressions) and its own section ``generate.backends.<name>`` only (it loads its
model then, and checks that it knows every requested expression), then called with
batches of ``Job``s. Each job carries its own seed, so an output never depends on
which batch or process made it.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from pipeline.core.config import GenerateParams
from pipeline.core.errors import UserError
from pipeline.core.registry import Registry

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Job:
    """One variant to make: which image, which expression, which seed."""

    image: np.ndarray  # H x W x 3 uint8 RGB, the source crop
    expression: str
    seed: int
    key: str  # identifies the source image (its sha256): per-source caches use it


@dataclass(frozen=True)
class Variant:
    """A generated image with the parameters actually applied, or why there is none."""

    image: np.ndarray | None
    applied: dict[str, Any] = field(default_factory=dict)
    error: str = ""


class Generator(Protocol):
    name: ClassVar[str]
    cpu_parallel: ClassVar[bool]  # True: one instance per worker process is fine and faster

    def __init__(self, params: GenerateParams) -> None: ...

    def generate(self, jobs: Sequence[Job]) -> list[Variant]: ...


GENERATORS: Registry[type[Generator]] = Registry("generator")


class Backend:
    """Base of the bundled generators: the class header names and registers the backend.

    ``class WarpGenerator(Backend, name="warp", help="...", cpu_parallel=True)``; a
    subclass without ``name`` (a shared base such as the diffusion one) is not registered.
    """

    name: ClassVar[str]
    cpu_parallel: ClassVar[bool] = False

    def __init_subclass__(
        cls, *, name: str = "", help: str = "", cpu_parallel: bool | None = None, **kwargs: Any
    ) -> None:
        super().__init_subclass__(**kwargs)
        if cpu_parallel is not None:
            cls.cpu_parallel = cpu_parallel
        if name:
            cls.name = name
            GENERATORS.register(name, help=help)(cls)


class SlowDeviceWarning(UserWarning):
    """A diffusion job on the CPU is estimated to take long per image."""


# One UNet pass (one input of a guidance batch) of a Stable-Diffusion-1.5-sized UNet at
# 512 px, float32, on 2 CPU cores: measured 20-25 s (benchmarks/generate.py's sd15_unet,
# random weights; 47 s at 768 px); the VAE's encode and decode at 512 px: 58 s. Both are
# taken to scale with the pixel count and inversely with the threads. Below 512 px this
# is a lower bound: 256 px measured 11-14 s a pass, not the 5.5 s the scaling gives.
CPU_UNET_PASS_SECONDS = 22.0
CPU_VAE_SECONDS = 60.0
CPU_MEASURED_THREADS = 2
SLOW_SECONDS_PER_IMAGE = 30.0  # a few-shot set (tens of images) then takes half an hour


def check_expressions(backend: str, wanted: Sequence[str], known: Sequence[str]) -> None:
    """Fail before any model loads when an expression has no meaning for the backend."""
    missing = [e for e in wanted if e not in known]
    if missing:
        raise UserError(
            f"generator {backend!r} cannot make expression(s) {', '.join(missing)}; "
            f"it knows: {', '.join(known)}"
        )


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto`` is half precision on CUDA (twice the speed, half the memory), else float32."""
    import torch

    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    dtype = getattr(torch, name)
    if device.type == "cpu" and dtype == torch.float16:
        raise UserError("dtype float16 is not supported on the CPU; use auto or float32")
    return dtype


def cpu_seconds_per_image(size: int, steps: int, unet_passes: int, threads: int) -> float:
    """Estimated seconds per image for a Stable-Diffusion-1.5-sized pipeline on the CPU.

    ``steps`` denoising steps of ``unet_passes`` UNet inputs each (2 with text guidance,
    3 for instruct-pix2pix's text and image guidance), at ``size`` x ``size`` pixels.
    """
    scale = (size / 512) ** 2 * CPU_MEASURED_THREADS / max(1, threads)
    return scale * (steps * unet_passes * CPU_UNET_PASS_SECONDS + CPU_VAE_SECONDS)


def warn_if_slow(backend: str, device: torch.device, size: int, steps: int, passes: int) -> None:
    """Warn, with the estimate, when a CPU would take long per image; silent otherwise."""
    import torch

    if device.type != "cpu":
        return
    threads = torch.get_num_threads()
    seconds = cpu_seconds_per_image(size, steps, passes, threads)
    if seconds < SLOW_SECONDS_PER_IMAGE:
        return
    warnings.warn(
        f"{backend} runs on the CPU: about {_duration(seconds)} per image at {size} px and "
        f"{steps} denoising steps of {passes} UNet passes (estimated for a Stable Diffusion "
        f"1.5-sized model on {threads} threads); use a CUDA device for real runs",
        SlowDeviceWarning,
        stacklevel=3,
    )


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def resize_rgb(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """Area filter down, cubic up: the usual choice for each direction."""
    import cv2

    if rgb.shape[1] == width and rgb.shape[0] == height:
        return rgb
    shrinking = width * height < rgb.shape[0] * rgb.shape[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
    return cv2.resize(rgb, (width, height), interpolation=interpolation)


def to_uint8(images: np.ndarray) -> np.ndarray:
    """[0, 1] floats -> uint8, rounded (not truncated) so that a mid-grey stays mid-grey."""
    return np.clip(np.rint(images * 255.0), 0, 255).astype(np.uint8)


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
