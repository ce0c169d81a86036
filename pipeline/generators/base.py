"""The interface every generative backend implements, and what they share.

A backend is a class registered in ``GENERATORS``: built once from the
``generate`` params (it loads its model then, and checks that it knows every
requested expression), then called with batches of ``Job``s. Each job carries its
own seed, so an output never depends on which batch or process made it.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from pipeline.config import GenerateParams
from pipeline.errors import UserError
from pipeline.registry import Registry

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


class SlowDeviceWarning(UserWarning):
    """A diffusion model is about to run on a CPU: minutes per image at full size."""


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
        raise UserError("generate.dtype float16 is not supported on the CPU; use auto or float32")
    return dtype


def warn_if_cpu(backend: str, device: torch.device, params: GenerateParams) -> None:
    if device.type == "cpu":
        warnings.warn(
            f"{backend} runs on the CPU: expect minutes per image at {params.diffusion_size} px "
            f"and {params.steps} steps; use a CUDA device for real runs",
            SlowDeviceWarning,
            stacklevel=3,
        )


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
