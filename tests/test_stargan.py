"""StarGAN: the authors' layer names, checkpoint loading, one output per domain."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.components.generators import Job
from pipeline.components.generators.stargan import (
    RAFD_DOMAINS,
    Generator,
    StarGANGenerator,
    architecture,
    domain_code,
    load_generator,
    translate,
)
from pipeline.core.errors import UserError
from pipeline.core.files import sha256_file
from pipeline.core.images import encode_jpeg
from pipeline.core.manifest import read_manifest, write_manifest
from pipeline.core.params import load_params
from stages import generate


def _checkpoint(path: Path, conv_dim: int = 8, c_dim: int = 8, repeat_num: int = 2) -> Path:
    """A random-weight generator saved the way the authors' solver saves G."""
    torch.manual_seed(0)
    model = Generator(conv_dim, c_dim, repeat_num)
    for module in model.modules():  # random affine norms so that every layer matters
        if isinstance(module, torch.nn.InstanceNorm2d):
            torch.nn.init.uniform_(module.weight, 0.5, 1.5)
            torch.nn.init.uniform_(module.bias, -0.2, 0.2)
    torch.save(model.state_dict(), path)
    return path


def test_layer_names_and_shapes_match_the_authors_generator() -> None:
    state = Generator(conv_dim=64, c_dim=5, repeat_num=6).state_dict()
    # Sequential indices of the reference model.py: 3 stem, 2x3 down, 6 blocks, 2x3 up, conv, tanh.
    assert state["main.0.weight"].shape == (64, 8, 7, 7)
    assert state["main.3.weight"].shape == (128, 64, 4, 4)
    assert state["main.6.weight"].shape == (256, 128, 4, 4)
    assert state["main.9.main.0.weight"].shape == (256, 256, 3, 3)
    assert state["main.14.main.4.running_var"].shape == (256,)
    assert state["main.15.weight"].shape == (256, 128, 4, 4)  # ConvTranspose2d: (in, out, k, k)
    assert state["main.18.weight"].shape == (128, 64, 4, 4)
    assert state["main.21.weight"].shape == (3, 64, 7, 7)
    assert "main.1.num_batches_tracked" in state
    assert not any(key.endswith(".bias") and "main.0" in key for key in state)  # bias=False
    assert architecture(state) == (64, 5, 6)


def test_checkpoint_loads_weights_only_and_translates_every_domain(tmp_path: Path) -> None:
    model = load_generator(_checkpoint(tmp_path / "200000-G.ckpt"))
    assert (model.c_dim, len(model.main)) == (8, 19)
    images = torch.from_numpy(np.random.default_rng(0).uniform(0, 255, (1, 3, 32, 32))).float()
    outputs = [
        translate(model, images, domain_code(8, 8, i)[None]) for i in range(len(RAFD_DOMAINS))
    ]
    assert all(o.shape == (1, 3, 32, 32) and o.min() >= 0 and o.max() <= 255 for o in outputs)
    assert len({o.numpy().tobytes() for o in outputs}) == len(RAFD_DOMAINS)  # the code matters


def test_normalisation_uses_each_images_own_statistics(tmp_path: Path) -> None:
    """Eval mode must not switch to the checkpoint's running averages."""
    model = load_generator(_checkpoint(tmp_path / "g.ckpt"))
    x = torch.rand(2, 3, 16, 16) * 255
    code = domain_code(8, 8, 4).expand(2, -1)
    before = translate(model, x, code)
    for module in model.modules():
        if isinstance(module, torch.nn.InstanceNorm2d):
            module.running_mean.fill_(5.0)
    assert torch.equal(before, translate(model, x, code))
    assert torch.allclose(translate(model, x[:1], code[:1]), before[:1], atol=1e-3)  # per image


def test_backend_makes_every_expression_at_source_size(tmp_path: Path) -> None:
    checkpoint = _checkpoint(tmp_path / "g.ckpt")
    expressions = [*RAFD_DOMAINS, "smile", "frown", "surprise"]
    params = load_params(
        overrides={
            "generate.backend": "stargan",
            "generate.backends.stargan.checkpoint": str(checkpoint),
            "generate.expressions": expressions,
            "generate.backends.stargan.size": 32,
            "generate.backends.stargan.device": "cpu",
            "generate.backends.stargan.batch_size": 5,
        }
    ).generate
    backend = StarGANGenerator(params)
    face = np.random.default_rng(1).integers(0, 256, (48, 40, 3), dtype=np.uint8)
    variants = backend.generate([Job(face, e, i, "k") for i, e in enumerate(expressions)])
    assert [v.applied["domain"] for v in variants[-3:]] == ["happy", "sad", "surprised"]
    assert all(v.image is not None and v.image.shape == (48, 40, 3) for v in variants)
    by_domain = {v.applied["domain"]: v.image.tobytes() for v in variants}  # type: ignore[union-attr]
    assert len(by_domain) == len(RAFD_DOMAINS)
    assert variants[0].image.tobytes() == by_domain["angry"]  # type: ignore[union-attr]


def test_joint_celeba_rafd_code_has_the_mask() -> None:
    code = domain_code(15, 8, 2)
    assert code.tolist() == [0] * 5 + [0, 0, 1, 0, 0, 0, 0, 0] + [0, 1]
    with pytest.raises(UserError, match="8 domains"):
        domain_code(12, 8, 0)


def test_missing_or_wrong_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    params = load_params(
        overrides={"generate.backend": "stargan", "generate.backends.stargan.device": "cpu"}
    ).generate
    with pytest.raises(UserError, match="needs a generator checkpoint"):
        StarGANGenerator(params)
    with pytest.raises(UserError, match="does not exist"):
        load_generator(tmp_path / "nope.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read"):
        load_generator(tmp_path / "junk.ckpt")
    torch.save({"weight": torch.zeros(3)}, tmp_path / "other.ckpt")
    with pytest.raises(UserError, match="not a StarGAN generator"):
        load_generator(tmp_path / "other.ckpt")


def test_unknown_expression_fails_before_loading(tmp_path: Path) -> None:
    params = load_params(
        overrides={"generate.backend": "stargan", "generate.expressions": ["wink"]}
    ).generate
    with pytest.raises(UserError, match=r"cannot make expression.*wink"):
        StarGANGenerator(params)


def test_stage_runs_stargan_in_batches_across_images(tmp_path: Path, in_tmp: Path) -> None:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(3):
        path = Path(f"faces/a/{i}.jpg")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode_jpeg(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8), 95))
        rows.append({"path": path.as_posix(), "label": "a", "sha256": sha256_file(path)})
    write_manifest(Path("split.csv"), rows)
    overrides = {
        "generate.enabled": True, "generate.backend": "stargan",
        "generate.backends.stargan.device": "cpu",
        "generate.backends.stargan.checkpoint": str(_checkpoint(tmp_path / "g.ckpt")),
        "generate.backends.stargan.batch_size": 4, "generate.backends.stargan.size": 32,
        "generate.identity_threshold": 10.0,  # random weights
    }  # fmt: skip
    report = generate.run(
        load_params(overrides=overrides).generate,
        load_params().embed,
        0,
        Path("split.csv"),
        Path("g"),
    )
    out = read_manifest(Path("g/manifest.csv"))
    assert report.n_in == report.n_kept == len(out) == 9
    assert [r["expression"] for r in out[:3]] == ["smile", "frown", "surprise"]
    assert {r["params"] for r in out[:3]} == {
        '{"domain":"happy","size":32}', '{"domain":"sad","size":32}',
        '{"domain":"surprised","size":32}',
    }  # fmt: skip
