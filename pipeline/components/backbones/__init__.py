"""Named backbones for fine-tuning (`prep backbones`): the interface in ``base``.

Importing this package registers every backbone: ImageNet ones and the from-scratch
control in ``imagenet``, face networks in ``faces``.
"""

from pipeline.components.backbones import faces, imagenet  # noqa: F401 - registers the backbones
from pipeline.components.backbones.base import (
    BACKBONES,
    Aligner,
    Backbone,
    Freeze,
    WeightSource,
    build_trunk,
    freeze_layers,
    get_backbone,
    layer_names,
    weights_status,
)

__all__ = [
    "BACKBONES",
    "Aligner",
    "Backbone",
    "Freeze",
    "WeightSource",
    "build_trunk",
    "freeze_layers",
    "get_backbone",
    "layer_names",
    "weights_status",
]
