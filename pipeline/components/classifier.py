"""A backbone with a new head, how much of it trains, how it is fed, and how it is saved.

``Classifier`` is ``head(trunk(x))``; ``frozen_count`` / ``apply_freeze`` fix the trunk's
first layers (as ``pipeline.components.backbones.freeze_layers`` counts them);
``load_images`` decodes rows into a uint8 batch (cut by the backbone's aligner first);
``save_model`` / ``load_model`` write and rebuild a trained model from plain files.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from pipeline.components.backbones import (
    Aligner,
    Backbone,
    Freeze,
    build_trunk,
    freeze_layers,
    get_backbone,
)
from pipeline.core.checkpoints import load_state_dict
from pipeline.core.crops import face_box_in_crop
from pipeline.core.errors import UserError
from pipeline.core.files import atomic_write_bytes, atomic_write_text
from pipeline.core.images import MAX_PIXELS, ImageError, load_rgb
from pipeline.core.rows import ImageRow


class Classifier(nn.Module):
    """A backbone trunk plus a new linear head: ``head(trunk(x))``."""

    def __init__(self, trunk: nn.Module, feature_dim: int, n_classes: int) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = nn.Linear(feature_dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))


MODEL_FILE = "model.pt"
META_FILE = "model.json"


def save_model(out: Path, model: Classifier, meta: dict[str, Any]) -> None:
    """``model.pt`` (a plain state dict) and ``model.json`` (classes, backbone, input size)."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    atomic_write_bytes(out / MODEL_FILE, buffer.getvalue())
    atomic_write_text(out / META_FILE, json.dumps(meta, indent=2) + "\n")


def load_model(folder: Path) -> tuple[Classifier, Backbone, dict[str, Any]]:
    """Rebuild a trained classifier from ``save_model``'s files, no network or pickles needed."""
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        raise UserError(f"no trained model in {folder}/ ({META_FILE} missing): run `prep train`")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    backbone = get_backbone(meta["backbone"])
    trunk, dim = build_trunk(backbone, meta["image_size"], pretrained=False)
    model = Classifier(trunk, dim, len(meta["classes"]))
    state = load_state_dict(folder / MODEL_FILE, "trained model")
    model.load_state_dict(state)
    return model.eval(), backbone, meta


def own_trunk_state(path: Path, backbone: Backbone) -> dict[str, Any] | None:
    """The trunk of a model ``save_model`` wrote (its folder or its ``model.pt``), to start a
    new classifier from: the head is dropped, since the new class set needs a new one.

    None when ``path`` is some other weights file (a plain backbone state dict). A model of
    another backbone is refused by name when its ``model.json`` is beside it.
    """
    file = path / MODEL_FILE if path.is_dir() else path
    if path.is_dir() and not (path / META_FILE).is_file():
        raise UserError(f"{path}/ holds no model prep trained ({META_FILE} missing)")
    state = load_state_dict(file, "starting model")
    if not state or not all(k.startswith(("trunk.", "head.")) for k in state):
        return None
    meta_path = file.parent / META_FILE
    if meta_path.is_file():
        trained_on = json.loads(meta_path.read_text(encoding="utf-8")).get("backbone")
        if trained_on != backbone.name:
            raise UserError(
                f"{file} is a {trained_on!r} model; train.backbone is {backbone.name!r}: "
                f"set train.backbone={trained_on} to start from it"
            )
    return {k.removeprefix("trunk."): v for k, v in state.items() if k.startswith("trunk.")}


def load_trunk(trunk: nn.Module, state: dict[str, Any], origin: Path) -> None:
    """Load ``own_trunk_state``'s weights; any missing or extra tensor is an error."""
    result = trunk.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise UserError(
            f"{origin} does not fit this backbone: missing {result.missing_keys[:4]}, "
            f"unexpected {result.unexpected_keys[:4]}"
        )


def frozen_count(freeze: Freeze, n_layers: int) -> int:
    """How many leading layers ``freeze`` fixes: ``all``, an int count, or a fraction in (0, 1]."""
    if freeze == "all":
        return n_layers
    if isinstance(freeze, bool) or not isinstance(freeze, int | float):
        raise UserError(f"freeze must be 'all', a layer count or a fraction, got {freeze!r}")
    if isinstance(freeze, float):
        if not 0.0 < freeze <= 1.0:
            raise UserError(f"freeze fraction must be in (0, 1], got {freeze}")
        return round(freeze * n_layers)
    if not 0 <= freeze <= n_layers:
        raise UserError(f"freeze={freeze} but the backbone has {n_layers} layers (0..{n_layers})")
    return freeze


def apply_freeze(trunk: nn.Module, n_frozen: int) -> None:
    """Fix the first ``n_frozen`` layers' parameters and make the rest trainable."""
    for index, (_, module) in enumerate(freeze_layers(trunk)):
        for param in module.parameters(recurse=False):
            param.requires_grad_(index >= n_frozen)


def set_train_mode(model: nn.Module, batchnorm_eval: bool = False) -> None:
    """Train mode, except modules whose parameters are all fixed: they keep eval behaviour.

    A frozen BatchNorm must not drift its running statistics to the few new images, and a
    fully frozen block must not apply stochastic depth. ``batchnorm_eval`` keeps every
    BatchNorm on its running statistics while its scale and shift still train: a few-shot
    batch's own statistics are noisy.
    """
    model.train()
    for module in model.modules():
        params = list(module.parameters())
        frozen = params and not any(p.requires_grad for p in params)
        if frozen or (batchnorm_eval and isinstance(module, nn.modules.batchnorm._BatchNorm)):
            module.eval()


def count_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def load_images(rows: Sequence[ImageRow], size: int, align: Aligner | None = None) -> torch.Tensor:
    """Decode images once into an ``(N, 3, size, size)`` uint8 tensor (square resize).

    With ``align``, each image is first cut by it around the face its row records
    (``pipeline.core.crops.face_box_in_crop``; centred when the row does not say).
    """
    batch = torch.empty((len(rows), 3, size, size), dtype=torch.uint8)
    for index, row in enumerate(rows):
        try:
            rgb = load_rgb(Path(row.path), MAX_PIXELS)
        except ImageError as err:
            raise UserError(f"cannot read training image {row.path}: {err}") from None
        if align is not None:
            rgb = align(rgb, face_box_in_crop(row, rgb.shape[0]))
        if rgb.shape[:2] != (size, size):
            shrink = rgb.shape[0] > size or rgb.shape[1] > size
            rgb = cv2.resize(
                rgb, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
            )
        batch[index] = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))
    return batch


class Normalize(nn.Module):
    """uint8 images -> float, scaled to [0, 1], then the backbone's mean / std."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("scale", 1.0 / (torch.tensor(std).view(1, 3, 1, 1) * 255.0))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images.float() - self.mean) * self.scale
