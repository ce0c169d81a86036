"""`instruct-pix2pix` and `img2img`: diffusers pipelines, one edit per expression.

Both load a Stable Diffusion family pipeline by hub id (downloaded when the
network allows) or local folder, run it batched with one CPU ``torch.Generator``
per variant (the same noise on any device and in any batch), at
``diffusion_size`` pixels, and resize the result back to the crop's size.
GPU options: half precision (``dtype: auto`` on CUDA), attention slicing, VAE
tiling and model CPU offload for small cards.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from pipeline.components.generators.base import (
    GENERATORS,
    Job,
    Variant,
    check_expressions,
    offline,
    resize_rgb,
    resolve_dtype,
    to_uint8,
    warn_if_slow,
)
from pipeline.core.config import GenerateParams
from pipeline.core.errors import UserError

if TYPE_CHECKING:
    import torch


def load_pipeline(cls: Any, model: str, dtype: torch.dtype) -> Any:
    """``cls.from_pretrained`` on a local folder, or a hub id with a clear offline error."""
    local = Path(model).expanduser()
    if local.is_dir():
        return cls.from_pretrained(str(local), dtype=dtype)
    if model.startswith((".", "/", "~")) or local.suffix or local.exists():
        raise UserError(f"generate.model {model} is not a folder saved with save_pretrained")
    try:
        return cls.from_pretrained(model, dtype=dtype, local_files_only=offline())
    except Exception as err:  # hub errors come as OSError, HTTP and connection errors
        why = "offline (HF_HUB_OFFLINE=1) and not in the local cache" if offline() else str(err)
        raise UserError(
            f"cannot download {model}: {why}; pass a local path with generate.model "
            "(a folder written by save_pretrained)"
        ) from None


def place(pipe: Any, device: torch.device, params: GenerateParams) -> dict[str, Any]:
    """Move ``pipe`` to ``device`` with the memory options; returns what was enabled."""
    pipe.set_progress_bar_config(disable=True)
    enabled: dict[str, Any] = {}
    if params.attention_slicing:
        pipe.enable_attention_slicing()
        enabled["attention_slicing"] = True
    if params.vae_tiling:
        pipe.vae.enable_tiling()
        enabled["vae_tiling"] = True
    if params.cpu_offload and device.type == "cuda":
        # Sub-models wait on the CPU and visit the GPU one at a time (needs accelerate).
        pipe.enable_model_cpu_offload(gpu_id=device.index or 0)
        enabled["cpu_offload"] = True
    else:
        pipe.to(device)
    return enabled


class DiffusionGenerator(ABC):
    """Shared loading, batching and seeding; subclasses say what one call looks like."""

    name: ClassVar[str]
    cpu_parallel: ClassVar[bool] = False
    pipeline_class: ClassVar[str]
    default_model: ClassVar[str]

    def __init__(self, params: GenerateParams) -> None:
        from pipeline.core.devices import resolve_device

        self.check(params)
        try:
            import diffusers
        except ImportError:
            raise UserError(
                f"the {self.name} backend needs diffusers and transformers: "
                "pip install 'fewshot-prep[generate]'"
            ) from None
        self.params = params
        self.device = resolve_device(params.device)
        self.dtype = resolve_dtype(params.dtype, self.device)
        warn_if_slow(self.name, self.device, params.diffusion_size, *self.denoising(params))
        self.model = params.model or self.default_model
        cls = getattr(diffusers, self.pipeline_class)
        self.pipe = load_pipeline(cls, self.model, self.dtype)
        self.options = place(self.pipe, self.device, params)

    def check(self, params: GenerateParams) -> None:  # noqa: B027 - optional hook
        """Refuse settings the backend cannot honour, before loading a model."""

    @abstractmethod
    def denoising(self, params: GenerateParams) -> tuple[int, int]:
        """(denoising steps run, UNet passes per step): what one image costs."""

    def generate(self, jobs: Sequence[Job]) -> list[Variant]:
        out: list[Variant] = []
        for start in range(0, len(jobs), self.params.batch_size):
            out += self._batch(jobs[start : start + self.params.batch_size])
        return out

    def _batch(self, jobs: Sequence[Job]) -> list[Variant]:
        import torch
        from PIL import Image

        size = self.params.diffusion_size
        images = [Image.fromarray(resize_rgb(job.image, size, size)) for job in jobs]
        generators = [torch.Generator("cpu").manual_seed(job.seed) for job in jobs]
        with torch.inference_mode():
            result = self.pipe(
                image=images, generator=generators, output_type="np", **self.call_args(jobs)
            )
        pixels = to_uint8(np.asarray(result.images, dtype=np.float32))
        flagged = getattr(result, "nsfw_content_detected", None) or [False] * len(jobs)
        return [
            self._variant(job, rgb, bool(nsfw))
            for job, rgb, nsfw in zip(jobs, pixels, flagged, strict=True)
        ]

    def _variant(self, job: Job, rgb: np.ndarray, nsfw: bool) -> Variant:
        if nsfw:  # the model's safety checker blacked the image out
            return Variant(None, error="the model's safety checker replaced the image")
        height, width = job.image.shape[:2]
        applied = {**self.describe(job), "model": self.model, **self.options}
        return Variant(resize_rgb(rgb, width, height), applied)

    @abstractmethod
    def call_args(self, jobs: Sequence[Job]) -> dict[str, Any]:
        """The pipeline's keyword arguments for a batch (prompts, images, strengths)."""

    @abstractmethod
    def describe(self, job: Job) -> dict[str, Any]:
        """The backend-specific parameters applied to one job, for the manifest."""


@GENERATORS.register(
    "instruct-pix2pix",
    help="diffusers InstructPix2Pix: one instruction per expression; params model, "
    "instructions, steps, guidance_scale, image_guidance_scale, diffusion_size",
)
class InstructPix2PixGenerator(DiffusionGenerator):
    name: ClassVar[str] = "instruct-pix2pix"
    pipeline_class: ClassVar[str] = "StableDiffusionInstructPix2PixPipeline"
    default_model: ClassVar[str] = "timbrooks/instruct-pix2pix"

    def check(self, params: GenerateParams) -> None:
        check_expressions(self.name, params.expressions, list(params.instructions))

    def denoising(self, params: GenerateParams) -> tuple[int, int]:
        # diffusers guides by text and image (3 UNet inputs) only when both scales allow
        guided = params.guidance_scale > 1 and params.image_guidance_scale >= 1
        return params.steps, 3 if guided else 1

    def call_args(self, jobs: Sequence[Job]) -> dict[str, Any]:
        p = self.params
        return {
            "prompt": [p.instructions[job.expression] for job in jobs],
            "negative_prompt": [p.negative_prompt] * len(jobs),
            "num_inference_steps": p.steps,
            "guidance_scale": p.guidance_scale,
            "image_guidance_scale": p.image_guidance_scale,
        }

    def describe(self, job: Job) -> dict[str, Any]:
        p = self.params
        return {
            "instruction": p.instructions[job.expression],
            "steps": p.steps,
            "guidance_scale": p.guidance_scale,
            "image_guidance_scale": p.image_guidance_scale,
            "size": p.diffusion_size,
        }


@GENERATORS.register(
    "img2img",
    help="diffusers image-to-image (SDEdit): prompt template per expression at a noise "
    "strength; params model, prompt, phrases, strength, steps, guidance_scale, diffusion_size",
)
class Img2ImgGenerator(DiffusionGenerator):
    name: ClassVar[str] = "img2img"
    pipeline_class: ClassVar[str] = "StableDiffusionImg2ImgPipeline"
    default_model: ClassVar[str] = "stable-diffusion-v1-5/stable-diffusion-v1-5"

    def check(self, params: GenerateParams) -> None:
        if int(params.steps * params.strength) < 1:
            raise UserError(
                f"img2img runs int(steps * strength) = int({params.steps} * {params.strength}) "
                "= 0 denoising steps; raise generate.steps or generate.strength"
            )

    def denoising(self, params: GenerateParams) -> tuple[int, int]:
        # SDEdit skips the first (1 - strength) of the schedule
        return int(params.steps * params.strength), 2 if params.guidance_scale > 1 else 1

    def prompt(self, expression: str) -> str:
        return self.params.prompt.format(expression=self.params.phrases.get(expression, expression))

    def call_args(self, jobs: Sequence[Job]) -> dict[str, Any]:
        p = self.params
        return {
            "prompt": [self.prompt(job.expression) for job in jobs],
            "negative_prompt": [p.negative_prompt] * len(jobs),
            "strength": p.strength,
            "num_inference_steps": p.steps,
            "guidance_scale": p.guidance_scale,
        }

    def describe(self, job: Job) -> dict[str, Any]:
        p = self.params
        return {
            "prompt": self.prompt(job.expression),
            "strength": p.strength,
            "steps": p.steps,
            "guidance_scale": p.guidance_scale,
            "size": p.diffusion_size,
        }
