"""`instruct-pix2pix` and `img2img`: diffusers pipelines, one edit per expression.

Both load a Stable Diffusion family pipeline by hub id (downloaded when the
network allows) or local folder, run it batched with one CPU ``torch.Generator``
per variant (the same noise on any device and in any batch), at their section's
``size`` pixels, and resize the result back to the crop's size.
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
    Backend,
    Job,
    Variant,
    check_expressions,
    offline,
    resize_rgb,
    resolve_dtype,
    to_uint8,
    warn_if_slow,
)
from pipeline.core.config import DiffusionParams, GenerateParams, Img2ImgParams, Pix2PixParams
from pipeline.core.errors import UserError

if TYPE_CHECKING:
    import torch


def load_pipeline(cls: Any, model: str, dtype: torch.dtype) -> Any:
    """``cls.from_pretrained`` on a local folder, or a hub id with a clear offline error."""
    local = Path(model).expanduser()
    if local.is_dir():
        return cls.from_pretrained(str(local), dtype=dtype)
    if model.startswith((".", "/", "~")) or local.suffix or local.exists():
        raise UserError(f"model {model} is not a folder saved with save_pretrained")
    try:
        return cls.from_pretrained(model, dtype=dtype, local_files_only=offline())
    except Exception as err:  # hub errors come as OSError, HTTP and connection errors
        why = "offline (HF_HUB_OFFLINE=1) and not in the local cache" if offline() else str(err)
        raise UserError(
            f"cannot download {model}: {why}; pass a local path as the backend's model "
            "(generate.backends.<backend>.model: a folder written by save_pretrained)"
        ) from None


def place(pipe: Any, device: torch.device, params: DiffusionParams) -> dict[str, Any]:
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


class DiffusionGenerator(Backend, ABC):
    """Shared loading, batching and seeding; subclasses say what one call looks like."""

    prompt_name: ClassVar[str]  # what the prompt is called in the manifest's parameters
    pipeline_class: ClassVar[str]

    def __init__(self, generate: GenerateParams) -> None:
        from pipeline.core.devices import resolve_device

        params: Any = generate.active  # this backend's section (Pix2Pix- or Img2ImgParams)
        self.check(params, generate.expressions)
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
        warn_if_slow(self.name, self.device, params.size, *self.denoising(params))
        self.model = params.model
        cls = getattr(diffusers, self.pipeline_class)
        self.pipe = load_pipeline(cls, self.model, self.dtype)
        self.options = place(self.pipe, self.device, params)

    @abstractmethod
    def check(self, params: Any, expressions: Sequence[str]) -> None:
        """Refuse settings the backend cannot honour, before loading a model."""

    @abstractmethod
    def denoising(self, params: Any) -> tuple[int, int]:
        """(denoising steps run, UNet passes per step): what one image costs."""

    def generate(self, jobs: Sequence[Job]) -> list[Variant]:
        out: list[Variant] = []
        for start in range(0, len(jobs), self.params.batch_size):
            out += self._batch(jobs[start : start + self.params.batch_size])
        return out

    def _batch(self, jobs: Sequence[Job]) -> list[Variant]:
        import torch
        from PIL import Image

        size = self.params.size
        images = [Image.fromarray(resize_rgb(job.image, size, size)) for job in jobs]
        generators = [torch.Generator("cpu").manual_seed(job.seed) for job in jobs]
        with torch.inference_mode():
            result = self.pipe(
                image=images,
                generator=generators,
                output_type="np",
                prompt=[self.prompt(job.expression) for job in jobs],
                negative_prompt=[self.params.negative_prompt] * len(jobs),
                **{_PIPELINE_NAMES.get(k, k): v for k, v in self.settings().items()},
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
        applied = {
            self.prompt_name: self.prompt(job.expression),
            **self.settings(),
            "size": self.params.size,
            "model": self.model,
            **self.options,
        }
        return Variant(resize_rgb(rgb, width, height), applied)

    @abstractmethod
    def prompt(self, expression: str) -> str:
        """The text that asks for ``expression``."""

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """The backend's sampler settings, named as in its params section."""


# params-section names that the diffusers pipelines call otherwise
_PIPELINE_NAMES = {"steps": "num_inference_steps"}


class InstructPix2PixGenerator(
    DiffusionGenerator,
    name="instruct-pix2pix",
    help="diffusers InstructPix2Pix: one instruction per expression; params "
    "backends.instruct-pix2pix: model, instructions, steps, guidance_scale, size",
):
    prompt_name: ClassVar[str] = "instruction"
    pipeline_class: ClassVar[str] = "StableDiffusionInstructPix2PixPipeline"

    def check(self, params: Pix2PixParams, expressions: Sequence[str]) -> None:
        check_expressions(self.name, expressions, list(params.instructions))

    def denoising(self, params: Pix2PixParams) -> tuple[int, int]:
        # diffusers guides by text and image (3 UNet inputs) only when both scales allow
        guided = params.guidance_scale > 1 and params.image_guidance_scale >= 1
        return params.steps, 3 if guided else 1

    def prompt(self, expression: str) -> str:
        return self.params.instructions[expression]

    def settings(self) -> dict[str, Any]:
        p = self.params
        return {
            "steps": p.steps,
            "guidance_scale": p.guidance_scale,
            "image_guidance_scale": p.image_guidance_scale,
        }


class Img2ImgGenerator(
    DiffusionGenerator,
    name="img2img",
    help="diffusers image-to-image (SDEdit): prompt template per expression at a noise "
    "strength; params backends.img2img: model, prompt, phrases, strength, steps, size",
):
    prompt_name: ClassVar[str] = "prompt"
    pipeline_class: ClassVar[str] = "StableDiffusionImg2ImgPipeline"

    def check(self, params: Img2ImgParams, expressions: Sequence[str]) -> None:
        if int(params.steps * params.strength) < 1:
            raise UserError(
                f"img2img runs int(steps * strength) = int({params.steps} * {params.strength}) "
                "= 0 denoising steps; raise generate.backends.img2img.steps or .strength"
            )

    def denoising(self, params: Img2ImgParams) -> tuple[int, int]:
        # SDEdit skips the first (1 - strength) of the schedule
        return int(params.steps * params.strength), 2 if params.guidance_scale > 1 else 1

    def prompt(self, expression: str) -> str:
        return self.params.prompt.format(expression=self.params.phrases.get(expression, expression))

    def settings(self) -> dict[str, Any]:
        p = self.params
        return {"strength": p.strength, "steps": p.steps, "guidance_scale": p.guidance_scale}
