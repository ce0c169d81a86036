"""Embedders and the embed stage: shapes, batching, the content-hash cache, real faces."""

from __future__ import annotations

import sys
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.components.embedders import (
    EMBEDDERS,
    Embeddings,
    FacenetEmbedder,
    build_embedder,
    face_models_dir,
    load_embeddings,
    save_embeddings,
)
from pipeline.components.identity import (
    IdentityRule,
    centre_distances,
    distances,
    find_wrong_identity,
)
from pipeline.core.errors import UserError
from pipeline.core.files import sha256_bytes
from pipeline.core.images import decode_rgb, encode_jpeg
from pipeline.core.manifest import Row, write_manifest
from pipeline.core.params import load_params
from stages import embed

SAME_PERSON = 0.6  # dlib's documented same-person limit for its 128-d embedding


@pytest.fixture(scope="module")
def dlib_embedder():
    return build_embedder(load_params().embed)


def _face_like(seed: int) -> np.ndarray:
    """A 160x160 crop with face-like structure (dark eyes and mouth on a skin oval)."""
    import cv2

    rng = np.random.default_rng(seed)
    img = np.full((160, 160, 3), rng.integers(60, 200, 3), dtype=np.uint8)
    skin = tuple(int(v) for v in rng.integers(150, 230, 3))
    cv2.ellipse(img, (80, 85), (50, 62), 0, 0, 360, skin, -1)
    for x in (60, 100):
        cv2.circle(img, (x + int(rng.integers(-3, 4)), 70), 6, (40, 30, 30), -1)
    cv2.ellipse(img, (80, 115), (18, 6), 0, 0, 360, (90, 40, 40), -1)
    return img


def _crop_manifest(tmp_path: Path, n: int, broken: int = 0) -> tuple[Path, list[Row]]:
    rows = []
    for i in range(n):
        data = encode_jpeg(_face_like(i), 92)
        path = tmp_path / "faces" / "a" / f"{i}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        rows.append({"path": str(path), "label": "a", "sha256": sha256_bytes(data)})
    for i in range(broken):
        path = tmp_path / "faces" / "a" / f"broken{i}.jpg"
        path.write_bytes(b"not a jpeg %d" % i)
        rows.append({"path": str(path), "label": "a", "sha256": sha256_bytes(path.read_bytes())})
    manifest = tmp_path / "faces" / "manifest.csv"
    write_manifest(manifest, rows)
    return manifest, rows


def test_registry_lists_every_embedder() -> None:
    assert EMBEDDERS.names() == ["dlib", "efficientnet_lite0", "facenet"]


def test_models_are_found_without_importing_the_package() -> None:
    models = face_models_dir()
    assert (models / "dlib_face_recognition_resnet_model_v1.dat").is_file()
    assert "face_recognition_models" not in sys.modules  # it would need pkg_resources


def test_dlib_vectors_shape_and_batching_changes_nothing(dlib_embedder) -> None:
    crops = [_face_like(i) for i in range(5)]
    batched = dlib_embedder.embed(crops)
    assert batched.shape == (5, 128) and batched.dtype == np.float32
    assert np.array_equal(batched, dlib_embedder.embed_one_at_a_time(crops))  # bit for bit
    assert np.array_equal(batched[2:3], dlib_embedder.embed(crops[2:3]))
    assert dlib_embedder.embed([]).shape == (0, 128)


def test_save_and_load_round_trip_with_stable_bytes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    vectors = {f"{i:064x}": rng.standard_normal(4).astype(np.float32) for i in (3, 1, 2)}
    save_embeddings(tmp_path / "a.npz", Embeddings("fp", vectors))
    save_embeddings(tmp_path / "b.npz", Embeddings("fp", dict(reversed(vectors.items()))))
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    loaded = load_embeddings(tmp_path / "a.npz")
    assert loaded.fingerprint == "fp" and len(loaded) == 3
    assert all(np.array_equal(loaded.vectors[k], v) for k, v in vectors.items())
    with pytest.raises(FileNotFoundError, match="prep embed"):
        load_embeddings(tmp_path / "missing.npz")


def test_stage_reuses_the_cache_by_content_hash(tmp_path: Path) -> None:
    manifest, rows = _crop_manifest(tmp_path, 4, broken=1)
    params = load_params().embed.model_copy(update={"workers": 1})
    out, cache = tmp_path / "emb.npz", tmp_path / "cache.npz"
    first = embed.run(params, manifest, out, cache)
    assert (first.runtime["computed"], first.runtime["cached"], first.n_kept) == (4, 0, 4)
    assert first.to_dict()["rejected_by_reason"] == {"unreadable": 1}
    assert "computed" not in first.to_dict()  # depends on earlier runs: not a metric
    second = embed.run(params, manifest, out, cache).runtime
    assert (second["computed"], second["cached"]) == (0, 4)
    # a new crop costs one embedding; the output holds exactly this manifest's crops
    write_manifest(manifest, rows[1:2])
    third = embed.run(params, manifest, out, cache).runtime
    assert (third["computed"], third["cached"]) == (0, 1)
    assert set(load_embeddings(out).vectors) == {rows[1]["sha256"]}
    assert len(load_embeddings(cache)) == 4


def test_stage_progress_counts_crops(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest, _ = _crop_manifest(tmp_path, 4, broken=1)
    params = load_params().embed.model_copy(update={"workers": 1, "batch_size": 2})
    embed.run(params, manifest, tmp_path / "emb.npz")
    assert "embed: 5/5 crops" in capsys.readouterr().err  # 3 batches, 5 crops


def test_cache_from_another_embedder_setting_is_not_reused(tmp_path: Path) -> None:
    manifest, _ = _crop_manifest(tmp_path, 2)
    params = load_params().embed.model_copy(update={"workers": 1})
    cache = tmp_path / "cache.npz"
    embed.run(params, manifest, tmp_path / "e.npz", cache)
    other = params.model_copy(update={"face_fraction": 0.8})
    assert embed.run(other, manifest, tmp_path / "e.npz", cache).runtime["computed"] == 2


@pytest.mark.slow
def test_two_worker_processes_give_the_same_vectors(tmp_path: Path) -> None:
    manifest, _ = _crop_manifest(tmp_path, 6)
    params = load_params().embed.model_copy(update={"batch_size": 2})
    embed.run(params.model_copy(update={"workers": 1}), manifest, tmp_path / "one.npz")
    embed.run(params.model_copy(update={"workers": 2}), manifest, tmp_path / "two.npz")
    assert (tmp_path / "one.npz").read_bytes() == (tmp_path / "two.npz").read_bytes()


def test_facenet_without_weights_offline_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(UserError, match=r"embed\.weights"):
        build_embedder(load_params(overrides={"embed.embedder": "facenet"}).embed)


def test_facenet_loads_weights_from_a_path(tmp_path: Path) -> None:
    """The loading path only: random weights say nothing about identity, so no distances."""
    from facenet_pytorch import InceptionResnetV1

    torch.manual_seed(0)
    weights = tmp_path / "facenet.pt"
    torch.save(InceptionResnetV1(pretrained=None).state_dict(), weights)
    embedder = FacenetEmbedder(str(weights), "cpu", batch_size=32)
    vectors = embedder.embed([_face_like(0), _face_like(1)[:150, :150]])
    assert vectors.shape == (2, 512)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert embedder.fingerprint.startswith("facenet:")


# ---------------------------------------------------------------- real photos


@pytest.fixture(scope="module")
def real_faces(
    tmp_path_factory: pytest.TempPathFactory, real_photos: dict[str, bytes]
) -> tuple[list[str], np.ndarray]:
    """Obama x3 and Biden from face_recognition's test images, through detect and embed."""
    from pipeline.components.detectors import torch_threads
    from pipeline.core.manifest import read_manifest
    from stages import detect

    root = tmp_path_factory.mktemp("real")
    for name, data in real_photos.items():
        label = name.rstrip("0123456789")
        decode_rgb(data, 1 << 30)  # a real JPEG
        (root / "raw" / label).mkdir(parents=True, exist_ok=True)
        (root / "raw" / label / f"{name}.jpg").write_bytes(data)
    params = load_params()
    with torch_threads(1):
        detect.run(params.detect.model_copy(update={"device": "cpu"}), root / "raw", root / "faces")
    embed.run(params.embed.model_copy(update={"workers": 1}), root / "faces" / "manifest.csv",
              root / "emb.npz")  # fmt: skip
    rows = read_manifest(root / "faces" / "manifest.csv")
    vectors = load_embeddings(root / "emb.npz")
    names = [Path(r["source"]).stem for r in rows]
    return names, np.stack([vectors.vectors[r["sha256"]] for r in rows]).astype(np.float64)


def test_real_faces_same_person_below_and_other_person_above(real_faces) -> None:
    names, vectors = real_faces
    assert sorted(names) == ["biden", "obama", "obama2", "obama3"]
    d = distances(vectors)
    obama = [i for i, n in enumerate(names) if n.startswith("obama")]
    biden = names.index("biden")
    same = [d[i, j] for i in obama for j in obama if i < j]
    other = [d[i, biden] for i in obama]
    clean = load_params().clean
    assert max(same) < SAME_PERSON < min(other), (same, other)
    # different photos of one person are not "the same photo" under the tight threshold
    assert min(same) > clean.label_conflict_distance
    assert min(same) > clean.duplicate_distance


def test_real_intruder_is_caught_by_the_default_rule(real_faces) -> None:
    """Biden among the Obama photos: far from the class centre, the Obamas are not."""
    names, vectors = real_faces
    clean = load_params().clean
    labels = ["obama"] * len(names)
    rule = IdentityRule(
        clean.wrong_identity, clean.wrong_identity_distance, clean.wrong_identity_relative, None
    )
    flagged = [names[o.index] for o in find_wrong_identity(labels, vectors, rule)]
    assert flagged == ["biden"]
    own = dict(zip(names, centre_distances(vectors), strict=True))
    for name in ("obama", "obama2", "obama3"):
        assert own[name] < clean.wrong_identity_distance < own["biden"], own
