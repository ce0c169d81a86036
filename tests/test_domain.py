"""The `domain` switch: `auto` resolved by the registries, and the `none` (whole image) detector."""

from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from pipeline.components.detectors import DETECTORS
from pipeline.components.embedders import EMBEDDERS
from pipeline.components.label_checks import CHECKS, check_kind
from pipeline.components.recipes import RECIPES, load_recipe
from pipeline.core.config import ConfigError, DetectParams
from pipeline.core.crops import face_box_in_crop
from pipeline.core.images import MAX_PIXELS, encode_png, load_rgb
from pipeline.core.manifest import read_manifest, read_rows
from pipeline.core.params import load_params
from pipeline.core.registry import Registry, UnknownNameError
from pipeline.core.rows import FaceRow
from stages import detect

REPO = Path(__file__).resolve().parents[1]
EXPECTED = {  # what `auto` means per domain, in every registry a stage resolves through
    "faces": {"detector": "mtcnn", "embedder": "dlib", "checks": "identity",
              "recipe": "medium", "backbone": "dlib_resnet"},
    "objects": {"detector": "none", "embedder": "efficientnet_lite0", "checks": "labels",
                "recipe": "keras", "backbone": "efficientnet_lite0"},
}  # fmt: skip


def test_auto_resolves_to_the_domains_default_and_names_override_it() -> None:
    from pipeline.components.backbones import BACKBONES, get_backbone

    registries = {"detector": DETECTORS, "embedder": EMBEDDERS, "checks": CHECKS,
                  "recipe": RECIPES, "backbone": BACKBONES}  # fmt: skip
    for domain, expected in EXPECTED.items():
        resolved = {key: reg.resolve("auto", domain) for key, reg in registries.items()}
        assert resolved == expected
        assert get_backbone("auto", domain).name == expected["backbone"]
        assert load_recipe("auto", domain).name == expected["recipe"]
    assert DETECTORS.resolve("none", "faces") == "none"  # a named component beats the domain
    with pytest.raises(UnknownNameError, match="known: mtcnn, none"):
        DETECTORS.resolve("yolo", "objects")


def test_registry_refuses_two_defaults_for_a_domain_and_reports_a_missing_one() -> None:
    reg: Registry[object] = Registry("thing")
    reg.register("a", default_for=("faces",))(object())
    with pytest.raises(ValueError, match="already has a default"):
        reg.register("b", default_for=("faces",))(object())
    with pytest.raises(ValueError, match="reserved"):
        reg.register("auto")(object())
    with pytest.raises(UnknownNameError, match="default for domain 'objects'"):
        reg.resolve("auto", "objects")


def test_the_top_level_domain_reaches_every_section_that_resolves_components() -> None:
    faces, objects = load_params(), load_params(overrides={"domain": "objects"})
    for section in ("detect", "embed", "clean", "augment", "train"):
        assert getattr(faces, section).domain == "faces"
        assert getattr(objects, section).domain == "objects"
    assert check_kind(objects.clean) == "labels" and check_kind(faces.clean) == "identity"
    # a stage key still overrides the domain's choice
    mixed = load_params(overrides={"domain": "objects", "clean.checks": "identity"})
    assert check_kind(mixed.clean) == "identity"
    with pytest.raises(ConfigError, match="top-level"):
        load_params(overrides={"detect.domain": "objects"})
    with pytest.raises(ConfigError, match="domain"):
        load_params(overrides={"domain": "cars"})


def test_stages_choose_components_through_registries_not_domain_branches() -> None:
    """The domain is never compared in a stage: what differs lives in registered components."""
    for path in sorted((REPO / "stages").glob("*.py")):
        assert not re.search(r"domain\s*[!=]=|==\s*['\"](faces|objects)", path.read_text()), path


def test_dvc_stages_that_resolve_components_declare_domain() -> None:
    import yaml

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name in ("detect", "embed", "clean", "generate", "augment", "train"):
        assert "domain" in stages[name]["params"], name


# ---------------------------------------------------------------- the none detector


def objects_params(**changes: object) -> DetectParams:
    base = load_params(overrides={"domain": "objects"}).detect
    return base.model_copy(update={"size": 64, "min_face_px": 32, **changes})


def _gradient(width: int, height: int) -> np.ndarray:
    xs = np.linspace(40, 250, width, dtype=np.float64)[None, :].repeat(height, 0)
    return np.stack([xs, xs[:, ::-1], np.full_like(xs, 128)], axis=2).astype(np.uint8)


@pytest.mark.parametrize("fit", ["letterbox", "crop"])
def test_none_detector_keeps_the_whole_image_as_one_crop(
    fit: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "raw" / "wide").mkdir(parents=True)
    (tmp_path / "raw" / "wide" / "a.png").write_bytes(encode_png(_gradient(128, 64)))
    report = detect.run(objects_params(fit=fit), Path("raw"), Path("faces"))
    assert report.n_kept == 1 and not report.rejected
    (row,) = read_rows(Path("faces/manifest.csv"), FaceRow)
    crop = load_rgb(Path(row.path), MAX_PIXELS)
    assert crop.shape == (64, 64, 3) and row.prob == 1.0 and row.landmarks is None
    box = face_box_in_crop(row, 64)
    if fit == "letterbox":  # all 128 columns, scaled by 0.5, centred with black bars
        assert row.box == (0.0, 0.0, 128.0, 64.0) and row.face_px == 64
        assert np.allclose(box, (0, 16, 64, 48), atol=0.01)
        assert crop[:12].max() < 8 and crop[52:].max() < 8  # the bars (JPEG-soft edges)
        assert crop[20:44].mean() > 60
    else:  # the centre square, no padding
        assert row.box == (32.0, 0.0, 96.0, 64.0)
        assert np.allclose(box, (0, 0, 64, 64), atol=0.01)
        assert crop.min() > 20


def _png_claiming(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 4))


def test_none_detector_rejects_like_mtcnn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same reasons: unreadable, too_large, outside_root, and too_small below min_face_px."""
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "raw" / "things"
    folder.mkdir(parents=True)
    (folder / "ok.png").write_bytes(encode_png(_gradient(40, 50)))
    (folder / "tiny.png").write_bytes(encode_png(_gradient(60, 20)))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    (folder / "bomb.png").write_bytes(_png_claiming(100_000, 100_000))
    outside = tmp_path / "elsewhere.png"
    outside.write_bytes(encode_png(_gradient(64, 64)))
    (folder / "link.png").symlink_to(outside)
    detect.run(objects_params(), Path("raw"), Path("faces"))
    reasons = {Path(r["path"]).name: r["reason"] for r in read_manifest(Path("faces/rejects.csv"))}
    assert reasons == {"tiny.png": "too_small", "broken.jpg": "unreadable",
                       "bomb.png": "too_large", "link.png": "outside_root"}  # fmt: skip
    kept = read_manifest(Path("faces/manifest.csv"))
    assert [Path(r["source"]).name for r in kept] == ["ok.png"]
