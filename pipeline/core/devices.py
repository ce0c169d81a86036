"""Choosing a torch device: `auto` means CUDA, then Apple MPS, then CPU."""

from __future__ import annotations

import torch

from pipeline.core.errors import UserError


def resolve_device(name: str) -> torch.device:
    """``auto | cpu | cuda | cuda:N | mps`` -> a device that exists here."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name!r} requested but CUDA is not available; use auto or cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"device {name!r} requested but MPS is not available; use auto or cpu")
    return device
