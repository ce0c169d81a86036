"""A reader of dlib's serialized face ResNet (``dlib_face_recognition_resnet_model_v1.dat``).

``read_dlib_file`` parses the file in Python + numpy (no dlib import), so that the network
can be rebuilt in torch (dlib_resnet.py) and fine-tuned like any other backbone.

dlib's file stores no topology: each layer writes only its own details, wrapped outer layer
first (a version number per wrapper, from the loss inwards), then the layers' details from the
input outwards. So the reader walks the known ``anet_type`` (``dlib_nodes``, from the same
``LEVELS`` the torch module is built from) and checks every version, layer name and shape
against it, as dlib's own deserialize does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.errors import UserError

# anet_type's shape: the file must match it, and dlib_resnet.py builds DlibResNet from it.
INPUT_SIZE = 150
DIM = 128
# (width, blocks) per level, input to output: dlib's alevel4 .. alevel0. Every level but the
# first opens with a block that halves the map (ares_down).
LEVELS = ((32, 3), (64, 4), (128, 3), (256, 3), (256, 1))
BLOCKS = tuple(
    (width, level > 0 and i == 0) for level, (width, n) in enumerate(LEVELS) for i in range(n)
)

Node = tuple[Any, ...]  # (kind, *expected settings), one per dlib layer, tags and skips too
_WRAPPERS = {"tag": "add_tag_layer", "skip": "add_skip_layer"}  # anything else: add_layer


def dlib_nodes() -> list[Node]:
    """dlib's layers of ``anet_type``, input to output, with the settings the file must hold."""
    nodes: list[Node] = [("con", 32, 7, 2, 0), ("affine",), ("relu",), ("max_pool", 3, 2, 0)]
    for width, down in BLOCKS:
        nodes += [("tag",), ("con", width, 3, 2, 0) if down else ("con", width, 3, 1, 1)]
        nodes += [("affine",), ("relu",), ("con", width, 3, 1, 1), ("affine",)]
        nodes += [("tag",), ("skip",), ("avg_pool", 2, 2, 0)] if down else []
        nodes += [("add_prev",), ("relu",)]
    return [*nodes, ("avg_pool", 0, 1, 0), ("fc", DIM)]


class _Reader:
    """dlib's serialize.h primitives over the file's bytes; any fault is a UserError."""

    def __init__(self, data: bytes, path: Path) -> None:
        self.data, self.pos, self.path = memoryview(data), 0, path

    def fail(self, problem: str) -> UserError:
        return UserError(
            f"{self.path} is not dlib's face recognition ResNet "
            f"(dlib_face_recognition_resnet_model_v1.dat): {problem} at byte {self.pos}"
        )

    def take(self, n: int) -> memoryview:
        if self.pos + n > len(self.data):
            raise self.fail("the file ends early (truncated?)")
        self.pos += n
        return self.data[self.pos - n : self.pos]

    def int(self) -> int:
        # A control byte (bit 7: sign, low 4 bits: byte count), then little-endian bytes.
        control = self.take(1)[0]
        if control & 0x70 or control & 0x0F > 8:
            self.pos -= 1
            raise self.fail(f"bad integer control byte {control:#04x}")
        value = int.from_bytes(self.take(control & 0x0F), "little")
        return -value if control & 0x80 else value

    def ints(self, n: int) -> tuple[int, ...]:
        return tuple(self.int() for _ in range(n))

    def float(self) -> float:
        # float_details: (int64 mantissa, int16 exponent); exponents from 32000 code inf / nan.
        mantissa, exponent = self.int(), self.int()
        if exponent < 32000:
            return math.ldexp(mantissa, exponent)
        return {32000: math.inf, 32001: -math.inf}.get(exponent, math.nan)

    def floats(self, n: int) -> tuple[float, ...]:
        return tuple(self.float() for _ in range(n))

    def bools(self, n: int) -> None:
        for _ in range(n):
            if (byte := bytes(self.take(1))) not in (b"0", b"1"):
                raise self.fail(f"bad bool {byte!r}")

    def string(self) -> str:
        if not 0 <= (size := self.int()) <= 64:  # layer names are short: this is not one
            raise self.fail(f"implausible string length {size}")
        return bytes(self.take(size)).decode("latin-1")

    def version(self, allowed: tuple[int, ...], what: str) -> int:
        if (found := self.int()) not in allowed:
            raise self.fail(f"{what} version {found}, expected {' or '.join(map(str, allowed))}")
        return found

    def shape(self, version: int, what: str) -> tuple[int, ...]:
        self.version((version,), what)
        if min(shape := self.ints(4)) < 0:
            raise self.fail(f"negative tensor shape {shape}")
        return shape

    def tensor(self) -> np.ndarray:
        shape = self.shape(2, "tensor")
        return np.frombuffer(self.take(4 * math.prod(shape)), dtype="<f4").reshape(shape)

    def split(self, params: np.ndarray, n: int) -> list[np.ndarray]:
        """A layer's weights are one flat tensor; ``n`` alias tensors say how to cut it."""
        shapes = [self.shape(1, "alias_tensor") for _ in range(n)]
        sizes = [math.prod(s) for s in shapes]
        if params.size != sum(sizes):
            raise self.fail(f"{params.size} parameters where {shapes} need {sum(sizes)}")
        parts = np.split(params.reshape(-1), np.cumsum(sizes)[:-1])
        return [part.reshape(shape) for part, shape in zip(parts, shapes, strict=True)]


def _square(r: _Reader, what: str) -> tuple[int, int, int]:
    nr, nc, stride_y, stride_x, pad_y, pad_x = r.ints(6)
    if (nc, stride_x, pad_x) != (nr, stride_y, pad_y):
        raise r.fail(f"non-square {what} {nr}x{nc}, stride {stride_y}x{stride_x}")
    return nr, stride_y, pad_y


def _con(r: _Reader) -> dict[str, Any]:
    params, filters = r.tensor(), r.int()
    settings = (filters, *_square(r, "conv"))
    weight, bias = r.split(params, 2)
    r.floats(4)  # learning-rate and weight-decay multipliers
    return {"settings": settings, "weight": weight, "bias": bias.reshape(-1)}


def _affine(r: _Reader) -> dict[str, Any]:
    gamma, beta = r.split(r.tensor(), 2)
    r.int()  # layer mode (conv)
    return {"settings": (), "weight": gamma.reshape(-1), "bias": beta.reshape(-1)}


def _bn_as_affine(r: _Reader) -> dict[str, Any]:
    # What dlib's affine_(bn_) does: gamma / sqrt(running_var + eps), beta - g * running_mean.
    gamma, beta = (t.reshape(-1) for t in r.split(r.tensor(), 2))
    _, _, mean, var = (r.tensor().reshape(-1) for _ in range(4))  # means, invstds: batch stats
    r.ints(2), r.floats(4)
    g = gamma / np.sqrt(var + np.float32(r.float()))
    return {"settings": (), "weight": g, "bias": beta - g * mean}


def _fc(r: _Reader) -> dict[str, Any]:
    outputs, inputs = r.ints(2)
    (weight, bias) = r.split(r.tensor(), 2)
    if r.int() != 1 or bias.size:  # FC_NO_BIAS is 1
        raise r.fail("the fc layer has a bias; fc_no_bias expected")
    r.floats(4)
    if weight.shape[:2] != (inputs, outputs):
        raise r.fail(f"fc weights {weight.shape} for {inputs} inputs, {outputs} outputs")
    # dlib computes x @ W with W (inputs, outputs); torch's Linear stores W transposed.
    return {"settings": (outputs,), "weight": weight.reshape(inputs, outputs).T}


_LAYERS = {  # the name (and format version) dlib writes -> kind, reader
    "con_4": ("con", _con),
    "affine_": ("affine", _affine),
    "bn_con2": ("affine", _bn_as_affine),  # dlib's affine_ also loads a saved bn_con
    "relu_": ("relu", lambda r: {"settings": ()}),
    "max_pool_2": ("max_pool", lambda r: {"settings": _square(r, "pool")}),
    "avg_pool_2": ("avg_pool", lambda r: {"settings": _square(r, "pool")}),
    "add_prev_": ("add_prev", lambda r: {"settings": ()}),
    "fc_2": ("fc", _fc),
}


@dataclass(frozen=True)
class DlibFile:
    """What the file holds: input averages, parameterised layers in forward order, formats."""

    averages: tuple[float, float, float]  # RGB means dlib subtracts before dividing by 256
    layers: list[dict[str, Any]]  # con / affine / fc: kind, name, settings, weight[, bias]
    formats: tuple[str, ...]  # every wrapper and layer format found, e.g. "add_layer v2", "con_4"
    loss: tuple[float, float]  # loss_metric's margin and distance threshold, for reference


def _read_head(r: _Reader, nodes: list[Node]) -> tuple[tuple[float, float], list[int]]:
    """The loss, then one wrapper version per layer, outermost first."""
    r.version((1,), "add_loss_layer")
    if (loss := r.string()) != "loss_metric_2":
        raise r.fail(f"loss {loss!r}, expected loss_metric_2")
    margin_threshold = r.floats(2)
    versions = []
    for index, node in enumerate(reversed(nodes)):
        what = _WRAPPERS.get(node[0], "add_layer")
        innermost = index == len(nodes) - 1  # the add_layer that holds the input layer
        allowed = (1,) if what != "add_layer" else (2, 3) if innermost else (1, 2)
        versions.append(r.version(allowed, what))
    if (name := r.string()) != "input_rgb_image_sized":
        raise r.fail(f"input layer {name!r}, expected input_rgb_image_sized")
    return margin_threshold, versions[::-1]


def _read_layer(r: _Reader, node: Node, version: int, first: bool) -> dict[str, Any]:
    name = r.string()
    kind, read = _LAYERS.get(name, (None, None))
    if kind != node[0] or read is None:
        raise r.fail(f"layer {name!r} where dlib's anet_type has a {node[0]}")
    layer = {"kind": kind, "name": name, **read(r)}
    if layer["settings"] != node[1:]:
        raise r.fail(f"{kind} settings {layer['settings']}, expected {node[1:]}")
    # add_layer's training state: 3 flags, x_grad, cached_output, then params_grad (v2), or
    # for the first layer grad_final and (v3) the sample expansion factor.
    r.bools(3), r.tensor(), r.tensor()
    if first or version >= 2:
        r.tensor()
    if first and version >= 3:
        r.int()
    return layer


def read_dlib_file(path: Path) -> DlibFile:
    """Parse dlib's serialized ``anet_type``, checking every version, name and setting."""
    try:
        r = _Reader(path.read_bytes(), path)
    except OSError as err:
        raise UserError(f"cannot read the dlib model {path}: {err}") from None
    nodes = dlib_nodes()
    loss, versions = _read_head(r, nodes)
    averages = r.floats(3)
    if (size := r.ints(2)) != (INPUT_SIZE, INPUT_SIZE):
        raise r.fail(f"input size {size}, expected {INPUT_SIZE}x{INPUT_SIZE}")
    formats = {"add_loss_layer v1", "loss_metric_2", "input_rgb_image_sized"}
    layers = []
    for index, (node, version) in enumerate(zip(nodes, versions, strict=True)):
        wrapper = _WRAPPERS.get(node[0], "add_layer")
        formats.add(f"{wrapper} v{version}")
        if wrapper == "add_layer":
            layer = _read_layer(r, node, version, first=index == 0)
            formats.add(layer["name"])
            layers += [layer] if "weight" in layer else []
    if r.pos != len(r.data):
        raise r.fail(f"unexpected data after the network ({len(r.data) - r.pos} bytes)")
    return DlibFile((averages[0], averages[1], averages[2]), layers, tuple(sorted(formats)), loss)
