"""`stargan`: expression translation with a user's StarGAN generator checkpoint.

The StarGAN generator (Choi et al., CVPR 2018): one network translates a face into any of
several domains (here: expressions). The target domain is a one-hot code, replicated over
the image and concatenated to it as extra input channels; the network is fully
convolutional (trained on 128x128 aligned crops). Layer names follow the authors'
implementation (a ``main`` Sequential of conv 7x7, two stride-2 convs, residual blocks with
instance norm, two transposed convs, conv 7x7 + tanh), so their ``*-G.ckpt`` files, plain
state dicts, load with ``torch.load(weights_only=True)``. None is bundled.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - torch's own idiom
from torch import nn

from pipeline.components.generators.base import (
    Backend,
    Job,
    Variant,
    check_expressions,
    resize_rgb,
    resolve_dtype,
)
from pipeline.core.checkpoints import load_torch_file
from pipeline.core.config import GenerateParams
from pipeline.core.devices import resolve_device
from pipeline.core.errors import UserError

# RaFD's eight expressions in the order the authors' ImageFolder loader sees them
# (alphabetical folder names): index i of the one-hot code is RAFD_DOMAINS[i].
RAFD_DOMAINS = (
    "angry", "contemptuous", "disgusted", "fearful", "happy", "neutral", "sad", "surprised",
)  # fmt: skip
# The authors' joint CelebA + RaFD model: 5 CelebA attributes, 8 RaFD expressions and a
# 2-way mask vector ([0, 1] = "the RaFD part of the code is valid").
CELEBA_ATTRIBUTES = 5
MASK_DIM = 2


class InputStatsInstanceNorm(nn.InstanceNorm2d):
    """Instance norm that always normalises with the input's own statistics.

    The authors' layers track running statistics (so checkpoints hold them), but the
    generator was trained and is sampled with per-image statistics; in eval mode
    PyTorch would switch to the running averages and wash the image out.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.instance_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)


def _norm(channels: int) -> nn.Module:
    return InputStatsInstanceNorm(channels, affine=True, track_running_stats=True)


class ResidualBlock(nn.Module):
    """conv 3x3 -> IN -> ReLU -> conv 3x3 -> IN, plus the input."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(dim, dim, kernel_size=3, stride=1, padding=1, bias=False),
            _norm(dim),
            nn.ReLU(inplace=True),
            nn.Conv2d(dim, dim, kernel_size=3, stride=1, padding=1, bias=False),
            _norm(dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.main(x)


class Generator(nn.Module):
    """StarGAN's G: image (N, 3, H, W) in [-1, 1] + domain code (N, c_dim) -> image."""

    def __init__(self, conv_dim: int = 64, c_dim: int = 8, repeat_num: int = 6) -> None:
        super().__init__()
        self.c_dim = c_dim
        layers: list[nn.Module] = [
            nn.Conv2d(3 + c_dim, conv_dim, kernel_size=7, stride=1, padding=3, bias=False),
            _norm(conv_dim),
            nn.ReLU(inplace=True),
        ]
        dim = conv_dim
        for _ in range(2):  # down-sampling
            layers += [
                nn.Conv2d(dim, dim * 2, kernel_size=4, stride=2, padding=1, bias=False),
                _norm(dim * 2),
                nn.ReLU(inplace=True),
            ]
            dim *= 2
        layers += [ResidualBlock(dim) for _ in range(repeat_num)]  # bottleneck
        for _ in range(2):  # up-sampling
            layers += [
                nn.ConvTranspose2d(dim, dim // 2, kernel_size=4, stride=2, padding=1, bias=False),
                _norm(dim // 2),
                nn.ReLU(inplace=True),
            ]
            dim //= 2
        layers += [nn.Conv2d(dim, 3, kernel_size=7, stride=1, padding=3, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        code = c.view(c.size(0), c.size(1), 1, 1).expand(-1, -1, x.size(2), x.size(3))
        return self.main(torch.cat([x, code.to(x.dtype)], dim=1))


def architecture(state: dict[str, torch.Tensor]) -> tuple[int, int, int]:
    """(conv_dim, c_dim, repeat_num) read from a generator state dict's shapes."""
    first = state.get("main.0.weight")
    if first is None or first.ndim != 4:
        raise UserError("not a StarGAN generator checkpoint: no 4-d 'main.0.weight' tensor")
    blocks = {key.split(".")[1] for key in state if key.startswith("main.") and ".main." in key}
    return int(first.shape[0]), int(first.shape[1]) - 3, len(blocks)


def load_generator(checkpoint: Path, device: torch.device | str = "cpu") -> Generator:
    """A generator with the weights of ``checkpoint`` (the authors' ``*-G.ckpt`` format)."""
    if not checkpoint.is_file():
        raise UserError(
            f"StarGAN checkpoint {checkpoint} does not exist; set "
            "generate.backends.stargan.checkpoint to a generator state dict (e.g. the "
            "authors' 200000-G.ckpt for RaFD)"
        )
    state = load_torch_file(checkpoint, "StarGAN checkpoint")
    if isinstance(state, dict) and isinstance(state.get("G"), dict):
        state = state["G"]  # a combined {G, D} checkpoint
    if not isinstance(state, dict):
        raise UserError(f"{checkpoint} holds a {type(state).__name__}, not a state dict")
    conv_dim, c_dim, repeat_num = architecture(state)
    model = Generator(conv_dim, c_dim, repeat_num)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise UserError(f"{checkpoint} does not match StarGAN's generator: {err}") from None
    return model.eval().to(device)


def domain_code(c_dim: int, n_domains: int, index: int) -> torch.Tensor:
    """The (c_dim,) code selecting domain ``index`` of ``n_domains``.

    A single-dataset model takes a plain one-hot. The authors' joint CelebA + RaFD
    model takes [zeros(5), one-hot(8), mask [0, 1]].
    """
    code = torch.zeros(c_dim)
    if c_dim == n_domains:
        code[index] = 1.0
    elif c_dim == CELEBA_ATTRIBUTES + n_domains + MASK_DIM:
        code[CELEBA_ATTRIBUTES + index] = 1.0
        code[-1] = 1.0
    else:
        raise UserError(
            f"the checkpoint expects a {c_dim}-d domain code but "
            f"generate.backends.stargan.domains lists {n_domains} domains; list the "
            "checkpoint's domains in training order"
        )
    return code


@torch.inference_mode()
def translate(model: Generator, images: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """uint8-range float images (N, 3, H, W) in [0, 255] -> translated, same range."""
    x = images / 127.5 - 1.0
    out = model(x, codes)
    return ((out.float() + 1.0) * 127.5).clamp(0, 255)


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


class StarGANGenerator(
    Backend,
    name="stargan",
    help="StarGAN generator (Choi et al. 2018) from a checkpoint file: any of its domains "
    "(RaFD: 8 expressions); params backends.stargan: checkpoint, domains, size",
):
    """Deterministic (no noise input): the seed is recorded but changes nothing."""

    def __init__(self, generate: GenerateParams) -> None:
        params = generate.backends.stargan
        self.domains = list(params.domains)
        known = self.domains + [a for a, d in ALIASES.items() if d in self.domains]
        check_expressions(self.name, generate.expressions, known)
        if params.checkpoint is None:
            raise UserError(
                "the stargan backend needs a generator checkpoint: set "
                "generate.backends.stargan.checkpoint to its path (e.g. the authors' RaFD "
                "model, 200000-G.ckpt); none is bundled"
            )
        self.device = resolve_device(params.device)
        self.dtype = resolve_dtype(params.dtype, self.device)
        self.model = load_generator(Path(params.checkpoint), self.device).to(self.dtype)
        self.size = params.size
        self.batch_size = params.batch_size
        self.codes = {
            d: domain_code(self.model.c_dim, len(self.domains), i)
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
        crops = np.stack([resize_rgb(job.image, self.size, self.size) for job in jobs])
        images = torch.from_numpy(crops).permute(0, 3, 1, 2).to(self.device, self.dtype)
        codes = torch.stack([self.codes[self.domain(job.expression)] for job in jobs])
        translated = translate(self.model, images, codes.to(self.device))
        pixels = translated.round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        variants = []
        for job, rgb in zip(jobs, pixels, strict=True):
            height, width = job.image.shape[:2]
            applied = {"domain": self.domain(job.expression), "size": self.size}
            variants.append(Variant(resize_rgb(rgb, width, height), applied))
        return variants
