from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from pipeline.components.backbones import (
    BACKBONES,
    build_trunk,
    freeze_layers,
    get_backbone,
    layer_names,
    weights_status,
)
from pipeline.components.classifier import (
    Classifier,
    apply_freeze,
    count_trainable,
    frozen_count,
    load_images,
    load_model,
    save_model,
    set_train_mode,
)
from pipeline.core.errors import UserError
from pipeline.core.rows import ImageRow


def _offline(*args: object, **kwargs: object) -> None:
    raise urllib.error.URLError("offline (test)")


@pytest.fixture
def no_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty weights cache and downloads that fail as they do with no network."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _offline)
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", _offline)
    return tmp_path / "torch"


def test_registry_lists_every_backbone() -> None:
    assert set(BACKBONES.names()) == {
        "efficientnet_lite0", "resnet50", "mobilenet_v2", "vgg16", "inception_resnet_v1",
        "small_cnn", "dlib_resnet",
    }  # fmt: skip
    assert weights_status(get_backbone("efficientnet_lite0")) == "bundled"
    assert weights_status(get_backbone("dlib_resnet")) == "bundled"
    assert weights_status(get_backbone("small_cnn")) == "none"


def test_layer_counts_make_the_original_experiments_expressible() -> None:
    resnet = layer_names(get_backbone("resnet50"))
    mobilenet = layer_names(get_backbone("mobilenet_v2"))
    assert len(resnet) == 106 and len(mobilenet) == 104
    assert resnet[55][0] == "layer3.0.downsample.1"  # freeze: 56 = through layer3.0
    assert frozen_count(50, len(mobilenet)) == 50 and frozen_count(100, len(mobilenet)) == 100
    assert all(kind in {"Conv2d", "BatchNorm2d"} for _, kind in resnet)


@pytest.mark.parametrize(
    ("freeze", "expected"), [("all", 98), (0, 0), (10, 10), (0.5, 49), (1.0, 98)]
)
def test_frozen_count(freeze: str | int | float, expected: int) -> None:
    assert frozen_count(freeze, 98) == expected


@pytest.mark.parametrize("bad", [99, -1, 1.5, 0.0, "some", True])
def test_frozen_count_rejects_out_of_range(bad: object) -> None:
    with pytest.raises(UserError):
        frozen_count(bad, 98)  # type: ignore[arg-type]


def test_apply_freeze_fixes_exactly_the_leading_layers() -> None:
    trunk, dim = build_trunk(get_backbone("small_cnn"), 32)
    model = Classifier(trunk, dim, 3)
    layers = freeze_layers(trunk)
    sizes = [sum(p.numel() for p in m.parameters(recurse=False)) for _, m in layers]
    head = dim * 3 + 3
    for n_frozen in (0, 3, len(layers)):
        apply_freeze(trunk, n_frozen)
        assert count_trainable(model) == sum(sizes[n_frozen:]) + head


def test_frozen_batchnorm_keeps_its_statistics() -> None:
    trunk, _ = build_trunk(get_backbone("small_cnn"), 32)
    apply_freeze(trunk, 2)  # conv + first BatchNorm
    set_train_mode(trunk)
    first_bn, second_bn = trunk.features[1], trunk.features[5]
    assert not first_bn.training and second_bn.training
    before = first_bn.running_mean.clone()
    trunk(torch.rand(4, 3, 32, 32))
    assert torch.equal(first_bn.running_mean, before)
    assert not torch.equal(second_bn.running_mean, torch.zeros_like(second_bn.running_mean))


def test_efficientnet_lite0_loads_offline_with_pretrained_weights(no_network: Path) -> None:
    trunk, dim = build_trunk(get_backbone("efficientnet_lite0"), 64)
    trunk.eval()
    assert dim == 1280
    assert trunk(torch.rand(2, 3, 64, 64)).shape == (2, 1280)
    random_init, _ = get_backbone("efficientnet_lite0").make(64)
    assert not torch.equal(trunk._conv_stem.weight, random_init._conv_stem.weight)


@pytest.mark.parametrize("name", ["resnet50", "inception_resnet_v1"])
def test_offline_backbone_without_weights_says_how_to_supply_them(
    name: str, no_network: Path
) -> None:
    with pytest.raises(UserError) as err:
        build_trunk(get_backbone(name), 160)
    message = str(err.value)
    assert "train.weights" in message and "offline" in message
    assert str(no_network) in message  # where to put a downloaded file


def test_weights_file_loads_and_drops_the_old_classifier(tmp_path: Path) -> None:
    source = torchvision.models.mobilenet_v2(weights=None)  # includes the 1000-way classifier
    torch.save(source.state_dict(), tmp_path / "mnv2.pth")
    trunk, dim = build_trunk(get_backbone("mobilenet_v2"), 224, weights=tmp_path / "mnv2.pth")
    assert dim == 1280
    assert torch.equal(trunk.features[0][0].weight, source.features[0][0].weight)


def test_weights_file_of_another_architecture_is_refused(tmp_path: Path) -> None:
    trunk, _ = build_trunk(get_backbone("small_cnn"), 32)
    torch.save(trunk.state_dict(), tmp_path / "small.pt")
    with pytest.raises(UserError, match="does not fit"):
        build_trunk(get_backbone("mobilenet_v2"), 224, weights=tmp_path / "small.pt")


def test_weights_file_with_pickled_objects_is_refused(tmp_path: Path) -> None:
    torch.save({"net": nn.Linear(2, 2)}, tmp_path / "pickled.pt")  # a module, not tensors
    with pytest.raises(UserError, match="not plain weights"):
        build_trunk(get_backbone("small_cnn"), 32, weights=tmp_path / "pickled.pt")


def test_saved_model_round_trips(tmp_path: Path) -> None:
    trunk, dim = build_trunk(get_backbone("small_cnn"), 32)
    model = Classifier(trunk, dim, 2).eval()
    meta = {"backbone": "small_cnn", "image_size": 32, "classes": ["a", "b"]}
    save_model(tmp_path, model, meta)
    loaded, backbone, loaded_meta = load_model(tmp_path)
    x = torch.rand(3, 3, 32, 32)
    assert backbone.name == "small_cnn" and loaded_meta["classes"] == ["a", "b"]
    assert torch.allclose(loaded(x), model(x))


def test_load_images_decodes_and_resizes(make_image_folder) -> None:
    root = make_image_folder(classes=1, per_class=2, size=40)
    batch = load_images([ImageRow(path=str(p)) for p in sorted(root.rglob("*.jpg"))], 24)
    assert batch.shape == (2, 3, 24, 24) and batch.dtype == torch.uint8
