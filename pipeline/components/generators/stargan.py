"""`stargan`: expression translation with a user's StarGAN generator checkpoint."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np

from pipeline.components.generators.base import (
    GENERATORS,
    Job,
    Variant,
    check_expressions,
    resize_rgb,
    resolve_dtype,
)
from pipeline.core.config import GenerateParams
from pipeline.core.errors import UserError

# The project's expression words -> RaFD's domain names; a domain name works directly too.
ALIASES = {
    "smile": "happy",
    "frown": "sad",
    "surprise": "surprised",
    "anger": "angry",
    "disgust": "disgusted",
    "fear": "fearful",
    "contempt": "contemptuous",
}


@GENERATORS.register(
    "stargan",
    help="StarGAN generator (Choi et al. 2018) from a checkpoint file: any of its domains "
    "(RaFD: 8 expressions); params checkpoint, stargan_domains, stargan_size",
)
class StarGANGenerator:
    """Deterministic (no noise input): the seed is recorded but changes nothing."""

    name: ClassVar[str] = "stargan"
    cpu_parallel: ClassVar[bool] = False

    def __init__(self, params: GenerateParams) -> None:
        from pipeline.components import stargan
        from pipeline.core.devices import resolve_device

        self.domains = list(params.stargan_domains)
        known = self.domains + [a for a, d in ALIASES.items() if d in self.domains]
        check_expressions(self.name, params.expressions, known)
        if params.checkpoint is None:
            raise UserError(
                "the stargan backend needs a generator checkpoint: set generate.checkpoint to "
                "its path (e.g. the authors' RaFD model, 200000-G.ckpt); none is bundled"
            )
        self.device = resolve_device(params.device)
        self.dtype = resolve_dtype(params.dtype, self.device)
        self.model = stargan.load_generator(Path(params.checkpoint), self.device).to(self.dtype)
        self.size = params.stargan_size
        self.batch_size = params.batch_size
        self.codes = {
            d: stargan.domain_code(self.model.c_dim, len(self.domains), i)
            for i, d in enumerate(self.domains)
        }

    def domain(self, expression: str) -> str:
        return expression if expression in self.domains else ALIASES[expression]

    def generate(self, jobs: Sequence[Job]) -> list[Variant]:
        out: list[Variant] = []
        for start in range(0, len(jobs), self.batch_size):
            out += self._batch(jobs[start : start + self.batch_size])
        return out

    def _batch(self, jobs: Sequence[Job]) -> list[Variant]:
        import torch

        from pipeline.components import stargan

        crops = np.stack([resize_rgb(job.image, self.size, self.size) for job in jobs])
        images = torch.from_numpy(crops).permute(0, 3, 1, 2).to(self.device, self.dtype)
        codes = torch.stack([self.codes[self.domain(job.expression)] for job in jobs])
        translated = stargan.translate(self.model, images, codes.to(self.device))
        pixels = translated.round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        variants = []
        for job, rgb in zip(jobs, pixels, strict=True):
            height, width = job.image.shape[:2]
            applied = {"domain": self.domain(job.expression), "size": self.size}
            variants.append(Variant(resize_rgb(rgb, width, height), applied))
        return variants
