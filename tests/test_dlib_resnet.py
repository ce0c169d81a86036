"""dlib's face recognition ResNet in torch: the file reader, the module, equality with dlib."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import PHOTO_CACHE, require_photo_tarballs
from torch import nn

from pipeline.components.backbones import freeze_layers
from pipeline.components.dlib_resnet import (
    Affine,
    DlibFile,
    DlibResNet,
    add_padded,
    default_model_path,
    dlib_state_dict,
    load_dlib_resnet,
    normalise,
    read_dlib_file,
)
from pipeline.core.errors import UserError
from pipeline.core.images import decode_rgb

# Both run float32 on the CPU; measured 4e-7 per element and 1.2e-6 in distance on the johns.
# The limits leave room for other BLAS / conv kernels and stay far below the 0.6 at which dlib
# calls two faces one person: 1e-3 is 1/600 of it.
PER_ELEMENT = 1e-4
DISTANCE = 1e-3
SAME_PERSON = 0.6


# --- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def johns_photos() -> list[tuple[str, bytes]]:
    """(person, JPEG bytes) of the johns crops, read straight from the dlib 19.5.0 sdist."""
    from demo.real_faces import HEADSHOTS, read_members, sdist

    require_photo_tarballs("dlib")
    photos = read_members(sdist("dlib", PHOTO_CACHE), HEADSHOTS)
    return [(name.split("/")[0], data) for name, data in sorted(photos.items())]


@pytest.fixture(scope="module")
def dlib_net():
    import dlib

    return dlib.face_recognition_model_v1(str(default_model_path()))


@pytest.fixture(scope="module")
def johns_chips(johns_photos: list[tuple[str, bytes]]) -> tuple[list[str], np.ndarray]:
    """People and dlib's aligned 150x150 chips, cut as the dlib embedder cuts them."""
    from pipeline.components.embedders import DlibEmbedder

    embedder = DlibEmbedder()
    chips = [embedder.chip(decode_rgb(data, 10**8)) for _, data in johns_photos]
    return [person for person, _ in johns_photos], np.stack(chips)


@pytest.fixture(scope="module")
def port() -> tuple[DlibResNet, tuple[float, float, float]]:
    return load_dlib_resnet()


@pytest.fixture(scope="module")
def model_bytes() -> bytes:
    return default_model_path().read_bytes()


def _torch_descriptors(port, chips: np.ndarray) -> np.ndarray:
    net, averages = port
    with torch.inference_mode():
        return net(normalise(torch.from_numpy(chips).permute(0, 3, 1, 2), averages)).numpy()


def _dlib_descriptors(dlib_net, chips: np.ndarray) -> np.ndarray:
    return np.asarray([np.asarray(v) for v in dlib_net.compute_face_descriptor(list(chips))])


# --- structure --------------------------------------------------------------------------


def test_file_holds_dlibs_29_conv_resnet() -> None:
    parsed = read_dlib_file(default_model_path())
    kinds = [layer["kind"] for layer in parsed.layers]
    assert kinds == ["con", "affine"] * 29 + ["fc"]
    assert parsed.layers[0]["weight"].shape == (32, 3, 7, 7)
    assert parsed.layers[-2]["weight"].shape == (256,)  # the last affine
    assert parsed.layers[-1]["weight"].shape == (128, 256)  # fc_no_bias, torch's layout
    assert [layer["settings"][0] for layer in parsed.layers if layer["kind"] == "con"] == (
        [32] * 7 + [64] * 8 + [128] * 6 + [256] * 8
    )
    assert parsed.averages == pytest.approx((122.782, 117.001, 104.298), abs=1e-3)
    assert parsed.loss == pytest.approx((0.04, 0.6))
    assert {"con_4", "affine_", "fc_2", "add_layer v2", "add_layer v3"} <= set(parsed.formats)


def test_module_has_59_layers_and_a_128_d_output() -> None:
    net = DlibResNet()
    layers = freeze_layers(net)
    assert [type(m) for _, m in layers] == [nn.Conv2d, Affine] * 29 + [nn.Linear]
    assert sum(p.numel() for p in net.parameters()) == 5_614_592
    with torch.no_grad():
        for size in (150, 160):  # 150 is native; dlib's arithmetic allows 160 too
            assert net(torch.zeros(2, 3, size, size)).shape == (2, 128)


def test_down_blocks_zero_pad_the_smaller_map_like_dlib() -> None:
    net = DlibResNet()
    shapes: list[tuple[int, ...]] = []
    for block in net.blocks:
        if isinstance(block.shortcut, nn.AvgPool2d):
            for part in (block.affine2, block.shortcut):
                part.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape[1:])))
    with torch.no_grad():
        net(torch.zeros(1, 3, 150, 150))
    # (main path, shortcut): at 8x8 the stride-2 conv gives 3x3 but the 2x2 pool 4x4.
    assert shapes == [
        (64, 17, 17), (32, 17, 17), (128, 8, 8), (64, 8, 8),
        (256, 3, 3), (128, 4, 4), (256, 1, 1), (256, 2, 2),
    ]  # fmt: skip
    a, b = torch.ones(1, 2, 3, 3), torch.full((1, 1, 4, 4), 10.0)
    total = add_padded(a, b)
    assert total.shape == (1, 2, 4, 4)
    assert total[0, 0, :3, :3].eq(11).all() and total[0, 0, 3].eq(10).all()
    assert total[0, 1, :3, :3].eq(1).all() and total[0, 1, 3].eq(0).all()


def test_modules_are_registered_in_forward_order() -> None:
    net = DlibResNet()
    leaves = [(n, m) for n, m in net.named_modules() if not list(m.children())]
    fired: list[str] = []
    for name, module in leaves:
        module.register_forward_pre_hook(lambda m, i, name=name: fired.append(name))
    with torch.no_grad():
        net(torch.zeros(1, 3, 150, 150))
    assert fired == [name for name, _ in leaves]
    owners = {name for name, _ in freeze_layers(net)}
    assert [n for n in fired if n in owners] == [name for name, _ in freeze_layers(net)]


def test_gradients_reach_every_parameter() -> None:
    torch.manual_seed(0)
    net = DlibResNet().train()
    x = torch.randn(2, 3, 150, 150, requires_grad=True)
    net(x).pow(2).sum().backward()
    for name, param in net.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_state_dict_saves_and_loads_like_other_backbones(port) -> None:
    buffer = io.BytesIO()
    torch.save(dlib_state_dict(), buffer)
    buffer.seek(0)
    net = DlibResNet()
    net.load_state_dict(torch.load(buffer, weights_only=True), strict=True)
    for (key, value), (_, expected) in zip(
        net.state_dict().items(), port[0].state_dict().items(), strict=True
    ):
        assert torch.equal(value, expected), key


# --- equal to dlib ----------------------------------------------------------------------


def test_matches_dlib_on_real_faces(port, dlib_net, johns_chips) -> None:
    _, chips = johns_chips
    assert chips.shape == (55, 150, 150, 3)
    ours, theirs = _torch_descriptors(port, chips), _dlib_descriptors(dlib_net, chips)
    assert np.abs(ours - theirs).max() < PER_ELEMENT
    assert np.linalg.norm(ours - theirs, axis=1).max() < DISTANCE
    # dlib's descriptors are the raw fc output, not unit vectors (1.36..1.53 on these faces).
    assert np.linalg.norm(theirs, axis=1).min() > 1.1


def test_matches_dlib_on_random_input(port, dlib_net) -> None:
    chips = np.random.default_rng(0).integers(0, 256, (4, 150, 150, 3), dtype=np.uint8)
    ours, theirs = _torch_descriptors(port, chips), _dlib_descriptors(dlib_net, chips)
    assert np.abs(ours - theirs).max() < PER_ELEMENT
    assert np.linalg.norm(ours - theirs, axis=1).max() < DISTANCE


def test_port_tells_the_johns_apart(port, johns_chips) -> None:
    people, chips = johns_chips
    vectors = _torch_descriptors(port, chips)
    distances = np.linalg.norm(vectors[:, None] - vectors[None], axis=2)
    same = np.equal.outer(people, people)
    off_diagonal = ~np.eye(len(people), dtype=bool)
    np.fill_diagonal(distances, np.inf)
    assert all(same[i, distances[i].argmin()] for i in range(len(people)))
    assert np.median(distances[same & off_diagonal]) < SAME_PERSON < np.median(distances[~same])


# --- malformed files --------------------------------------------------------------------


MALFORMED = {  # case: (bytes from the real file's, what the message says)
    "empty": (lambda data: b"", "ends early"),
    "text": (lambda data: b"not a model\n" * 10, "bad integer|version"),
    "header only": (lambda data: data[:300], "ends early"),
    "cut in a tensor": (lambda data: data[: len(data) // 2], "ends early"),
    "last byte lost": (lambda data: data[:-1], "ends early"),
    "trailing bytes": (lambda data: data + b"\x00", "unexpected data"),
    "unknown layer": (lambda data: data.replace(b"\x05relu_", b"\x05relx_", 1), "'relx_'"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_file_is_a_user_error(tmp_path: Path, model_bytes: bytes, case: str) -> None:
    make, message = MALFORMED[case]
    path = tmp_path / "model.dat"
    path.write_bytes(make(model_bytes))
    with pytest.raises(UserError, match=message):
        load_dlib_resnet(path)


def test_missing_file_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="cannot read"):
        read_dlib_file(tmp_path / "absent.dat")


# --- a saved batch-norm layer -----------------------------------------------------------
# Serialized like dlib's serialize.h, to build what a training network (bn_con) would save.


def _int(value: int) -> bytes:
    raw = abs(value).to_bytes(max(1, (abs(value).bit_length() + 7) // 8), "little")
    return bytes([len(raw) | (0x80 if value < 0 else 0)]) + raw


def _float(value: float) -> bytes:
    mantissa, exponent = math.frexp(value)
    return _int(int(mantissa * 2**53)) + _int(exponent - 53)


def _tensor(array: np.ndarray) -> bytes:
    shape = array.reshape(-1, 1, 1, 1).shape if array.ndim == 1 else array.shape
    return _int(2) + b"".join(map(_int, shape)) + array.astype("<f4").tobytes()


def _alias(*shape: int) -> bytes:
    return _int(1) + b"".join(map(_int, shape))


def _string(text: str) -> bytes:
    return _int(len(text)) + text.encode()


def test_bn_con_record_becomes_an_affine_as_dlib_converts_it(
    tmp_path: Path, model_bytes: bytes
) -> None:
    original: DlibFile = read_dlib_file(default_model_path())
    gamma, beta = original.layers[1]["weight"], original.layers[1]["bias"]
    affine = (
        _string("affine_")
        + _tensor(np.concatenate([gamma, beta]))
        + _alias(1, 32, 1, 1) * 2
        + _int(0)  # CONV_MODE
    )
    start = model_bytes.index(affine)
    rng = np.random.default_rng(0)
    mean, var = rng.normal(size=32).astype(np.float32), rng.uniform(0.5, 2, 32).astype(np.float32)
    eps = 2.0**-10
    bn = _string("bn_con2") + _tensor(np.concatenate([gamma, beta])) + _alias(1, 32, 1, 1) * 2
    bn += b"".join(_tensor(t.reshape(1, 32, 1, 1)) for t in (mean * 0, var * 0, mean, var))
    bn += _int(1000) + _int(100) + b"".join(map(_float, (1.0, 1.0, 1.0, 0.0, eps)))
    path = tmp_path / "bn.dat"
    path.write_bytes(model_bytes[:start] + bn + model_bytes[start + len(affine) :])
    parsed = read_dlib_file(path)
    g = gamma / np.sqrt(var + np.float32(eps))
    np.testing.assert_allclose(parsed.layers[1]["weight"], g, rtol=1e-6)
    np.testing.assert_allclose(parsed.layers[1]["bias"], beta - g * mean, rtol=1e-6, atol=1e-6)
    assert "bn_con2" in parsed.formats
    np.testing.assert_array_equal(parsed.layers[2]["weight"], original.layers[2]["weight"])
