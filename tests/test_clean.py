from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.config import load_params
from pipeline.files import sha256_bytes
from pipeline.images import encode_jpeg
from pipeline.manifest import Row, read_manifest, write_manifest
from stages import clean


def _picture(seed: int) -> np.ndarray:
    """A distinct 160x160 picture: smooth random layout plus fine texture."""
    rng = np.random.default_rng(seed)
    layout = cv2.resize(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8), (160, 160))
    texture = cv2.resize(rng.integers(-40, 41, (64, 64, 3)).astype(np.float32), (160, 160))
    return np.clip(layout.astype(int) + texture, 0, 255).astype(np.uint8)


def _write(root: Path, label: str, name: str, rgb: np.ndarray, face_px: int = 120) -> Row:
    path = root / label / name
    path.parent.mkdir(parents=True, exist_ok=True)
    data = encode_jpeg(rgb, 92)
    path.write_bytes(data)
    sha = sha256_bytes(data)
    return {"path": str(path), "label": label, "sha256": sha, "face_px": str(face_px)}


@pytest.fixture
def faces(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """Two classes of 6 distinct crops plus one planted fault of each kind in class a."""
    rows = [_write(tmp_path, label, f"{i}.jpg", _picture(100 * c + i))
            for c, label in enumerate("ab") for i in range(6)]  # fmt: skip
    source = _picture(0)
    shrunk = cv2.resize(cv2.resize(source, (136, 136)), (160, 160))
    planted = {
        "exact_duplicate": _write(tmp_path, "a", "copy.jpg", source),
        "near_duplicate": _write(tmp_path, "a", "near.jpg", shrunk, face_px=90),
        "blurry": _write(tmp_path, "a", "blur.jpg", cv2.GaussianBlur(_picture(50), (0, 0), 4)),
        "too_small": _write(tmp_path, "a", "tiny.jpg", _picture(51), face_px=20),
    }
    rows += planted.values()
    # a class of two images is too small to keep
    rows += [_write(tmp_path, "c", f"{i}.jpg", _picture(300 + i)) for i in range(2)]
    manifest = tmp_path / "faces.csv"
    write_manifest(manifest, rows)
    return manifest, {reason: row["path"] for reason, row in planted.items()}


def test_each_planted_fault_gets_its_reason(tmp_path: Path, faces) -> None:
    manifest, planted = faces
    report = clean.run(load_params().clean, manifest, tmp_path / "clean")
    rejects = read_manifest(tmp_path / "clean" / "rejects.csv")
    reason_of = {r["path"]: r["reason"] for r in rejects}
    for reason, path in planted.items():
        assert reason_of.get(path) == reason, (path, reason_of.get(path))
    assert sorted(r["reason"] for r in rejects if r["label"] == "c") == ["class_too_small"] * 2
    kept = read_manifest(tmp_path / "clean" / "manifest.csv")
    assert len(kept) == 12  # every distinct clean image survives
    assert report.n_in == len(kept) + len(rejects)  # nothing lost
    assert all(r["detail"] for r in rejects)


def test_the_best_copy_of_a_duplicate_survives(tmp_path: Path, faces) -> None:
    manifest, planted = faces
    clean.run(load_params().clean, manifest, tmp_path / "clean")
    rejects = {r["path"]: r for r in read_manifest(tmp_path / "clean" / "rejects.csv")}
    assert rejects[planted["near_duplicate"]]["detail"].startswith("near duplicate of ")
    assert rejects[planted["near_duplicate"]]["detail"].split()[3].endswith("a/0.jpg")


def test_max_per_class_keeps_the_sharpest(tmp_path: Path, faces) -> None:
    manifest, _ = faces
    params = load_params(overrides={"clean.max_per_class": 4}).clean
    clean.run(params, manifest, tmp_path / "clean")
    kept = read_manifest(tmp_path / "clean" / "manifest.csv")
    assert {label: sum(r["label"] == label for r in kept) for label in "ab"} == {"a": 4, "b": 4}


def test_unreadable_crop_is_rejected_not_fatal(tmp_path: Path, faces) -> None:
    manifest, _ = faces
    rows = read_manifest(manifest)
    broken = tmp_path / "a" / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    rows.append({"path": str(broken), "label": "a", "sha256": "0" * 64, "face_px": "100"})
    write_manifest(manifest, rows)
    clean.run(load_params().clean, manifest, tmp_path / "clean")
    rejects = read_manifest(tmp_path / "clean" / "rejects.csv")
    assert [r["reason"] for r in rejects if r["path"] == str(broken)] == ["unreadable"]


def test_phash_tolerates_reencoding_but_separates_pictures() -> None:
    gray = cv2.cvtColor(_picture(7), cv2.COLOR_RGB2GRAY)
    reencoded = cv2.imdecode(cv2.imencode(".jpg", gray, [cv2.IMWRITE_JPEG_QUALITY, 60])[1], 0)
    other = cv2.cvtColor(_picture(8), cv2.COLOR_RGB2GRAY)
    assert clean.hamming(clean.phash(gray), clean.phash(reencoded)) <= 4
    assert clean.hamming(clean.phash(gray), clean.phash(other)) > 16
