"""Named backbones for fine-tuning: how to build each, count its layers, feed it, find weights.

A backbone here is a *trunk*: an image batch in, one feature vector per image out. Training
puts a new ``Linear`` head on it (``Classifier``); the backbone's own ImageNet / VGGFace2
classifier is dropped.

Layers, as ``train.freeze`` counts them: the trunk's *parameterised modules* -- every module
that owns weights directly (each Conv2d, BatchNorm, Linear counts once; containers, activations
and pooling do not) -- in registration order, which is forward order for these architectures.
The head is not a layer of the backbone. ``freeze: N`` fixes layers ``0 .. N-1``; a fraction
``f`` fixes ``round(f * n_layers)``; ``all`` fixes every layer (a linear probe); ``0`` fixes
none (full fine-tuning). ``prep backbones --layers NAME`` prints the numbered list, so a recipe
from elsewhere can be translated. ResNet50 has 106 layers here (Keras counts 175, activations and
additions included), so Keras' "first 90 layers fixed" (through ``conv4_block1``) is
``freeze: 56`` (through ``layer3.0``). MobileNetV2 has 104 here (Keras 155): "0 / 50 / 100 /
all fixed" are ``0``, ``50``, ``100``, ``all`` as counts of our layers, or ``0``, ``0.32``,
``0.65``, ``all`` as the same share of Keras' layers. A module whose parameters are all fixed
also runs in eval mode, so a frozen BatchNorm keeps its pretrained statistics.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.core.checkpoints import load_state_dict
from pipeline.core.errors import UserError
from pipeline.core.registry import Registry
from pipeline.core.rows import Box

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Freeze = str | int | float


@dataclass(frozen=True)
class WeightSource:
    """Where a backbone's standard weights live: a local file, fetched from ``url`` if missing."""

    describe: str
    file: Callable[[], Path]
    url: str | None = None  # None: the file ships inside an installed package
    loader: Callable[[], dict[str, torch.Tensor]] | None = None  # e.g. torchvision's weight enum
    reader: Callable[[Path], dict[str, torch.Tensor]] | None = None  # None: a torch state dict


Aligner = Callable[[np.ndarray, Box], np.ndarray]  # (face crop, face box in it) -> input image


@dataclass(frozen=True)
class Backbone:
    """Everything training and evaluation need to know about one named backbone."""

    name: str
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    make: Callable[[int], tuple[nn.Module, int]]  # image size -> (random-init trunk, feature dim)
    weights: WeightSource | None  # None: trained from scratch
    head_keys: tuple[str, ...] = ()  # state-dict prefixes of the original classifier, dropped
    # Builds what cuts the network's input from a face crop, for a network trained on aligned
    # faces (dlib's chips); None: the whole crop is resized.
    aligner: Callable[[], Aligner] | None = None

    @property
    def pretrained(self) -> bool:
        return self.weights is not None


BACKBONES: Registry[Callable[[], Backbone]] = Registry("backbone")


def get_backbone(name: str, domain: str = "faces") -> Backbone:
    """The named backbone; ``auto`` is ``domain``'s default (``default_for``)."""
    return BACKBONES.get(BACKBONES.resolve(name, domain))()


def build_trunk(
    backbone: Backbone, image_size: int, weights: Path | None = None, pretrained: bool = True,
    weights_key: str = "train.weights",
) -> tuple[nn.Module, int]:  # fmt: skip
    """The trunk with weights: ``weights`` if given, else the standard ones when ``pretrained``.

    ``pretrained=False`` gives the bare architecture (evaluation loads a full state dict).
    ``weights_key`` is the param that points to a weights file, for the offline error.
    """
    trunk, dim = backbone.make(image_size)
    if weights is not None:
        _load_into(trunk, load_state_dict(weights), backbone, str(weights))
    elif pretrained and backbone.weights is not None:
        state = standard_state_dict(backbone, weights_key)
        _load_into(trunk, state, backbone, backbone.weights.describe)
    return trunk, dim


def weights_status(backbone: Backbone) -> str:
    """One word for `prep backbones`: bundled, cached, download, or none (from scratch)."""
    source = backbone.weights
    if source is None:
        return "none"
    if source.url is None:
        return "bundled" if source.file().is_file() else "missing"
    return "cached" if source.file().is_file() else "download"


def standard_state_dict(
    backbone: Backbone, weights_key: str = "train.weights"
) -> dict[str, torch.Tensor]:
    """The backbone's standard weights, downloading them once when the network allows."""
    source = backbone.weights
    if source is None:
        raise UserError(f"backbone {backbone.name!r} has no standard weights")
    path = source.file()
    if path.is_file():
        return (source.reader or load_state_dict)(path)
    if source.url is None:
        raise UserError(f"{backbone.name}: bundled weights {path} are missing; reinstall")
    try:
        if source.loader is not None:
            return source.loader()
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(source.url, str(path), progress=False)
    except (OSError, RuntimeError) as err:
        raise UserError(_offline_message(backbone, source, err, weights_key)) from None
    return load_state_dict(path)


def _offline_message(
    backbone: Backbone, source: WeightSource, err: Exception, weights_key: str
) -> str:
    section, key = weights_key.split(".")
    return (
        f"{backbone.name!r} needs {source.describe} weights, which are not cached at "
        f"{source.file()} and could not be downloaded from {source.url} (offline? {err}). "
        f"Point to a state_dict file with `{weights_key}: <path>` (`prep {section} -s "
        f"{key}=<path>`), or download that file on a machine with network and copy it to "
        f"{source.file()}."
    )


def _load_into(trunk: nn.Module, state: dict[str, Any], backbone: Backbone, origin: str) -> None:
    """Load a backbone state dict, minus its old classifier; any other mismatch is an error."""
    cleaned = {
        key.removeprefix("module."): value
        for key, value in state.items()
        if not key.removeprefix("module.").startswith(backbone.head_keys or ("\0",))
    }
    result = trunk.load_state_dict(cleaned, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise UserError(
            f"{origin} does not fit backbone {backbone.name!r}: "
            f"missing {result.missing_keys[:4]}, unexpected {result.unexpected_keys[:4]}"
        )


def freeze_layers(trunk: nn.Module) -> list[tuple[str, nn.Module]]:
    """The trunk's layers as ``freeze`` counts them: modules owning parameters, in order."""
    return [
        (name, module)
        for name, module in trunk.named_modules()
        if any(True for _ in module.parameters(recurse=False))
    ]


def layer_names(backbone: Backbone, image_size: int | None = None) -> list[tuple[str, str]]:
    """(module name, type) of each layer ``freeze`` counts, built without allocating weights."""
    with torch.device("meta"):
        trunk, _ = backbone.make(image_size or backbone.input_size)
    return [(name, type(module).__name__) for name, module in freeze_layers(trunk)]
