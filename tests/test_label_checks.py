"""clean's label checks (objects): wrong_label from out-of-sample class probabilities.

The real-data test runs detect (none) -> embed (efficientnet_lite0) -> clean (labels) on
Fashion-MNIST photos from Debian's dataset-fashion-mnist, with 5% of them moved into a
wrong class folder, and holds the checks to the issue's bar.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline.components.label_checks import find_wrong_labels
from pipeline.core.errors import UserError
from pipeline.core.manifest import read_manifest
from pipeline.core.params import load_params

REPO = Path(__file__).resolve().parents[1]
FASHION_CACHE = REPO / ".cache" / "fashion-mnist"


def clusters(per_class: int = 15, dim: int = 16, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """Three well-separated Gaussian classes, unit length like the objects embedder's."""
    rng = np.random.default_rng(seed)
    centres = np.eye(dim)[:3] * 3
    labels = [name for name in ("a", "b", "c") for _ in range(per_class)]
    points = np.concatenate([c + 0.5 * rng.standard_normal((per_class, dim)) for c in centres])
    return labels, points / np.linalg.norm(points, axis=1, keepdims=True)


def test_moved_images_are_found_and_name_their_likely_class() -> None:
    labels, matrix = clusters()
    noisy = list(labels)
    noisy[3], noisy[20] = "c", "a"  # an "a" filed under c, a "b" filed under a
    wrong = find_wrong_labels(noisy, matrix, folds=5, min_prob=0.5, ratio=2.0)
    assert [(w.index, w.given, w.likely) for w in wrong] == [(3, "c", "a"), (20, "a", "b")]
    assert all(w.p_likely >= 0.5 and w.p_likely >= 2 * w.p_given for w in wrong)


def test_clean_labels_flag_nothing_and_tiny_classes_are_left_alone() -> None:
    labels, matrix = clusters()
    assert find_wrong_labels(labels, matrix, folds=5, min_prob=0.5, ratio=2.0) == []
    single = [*labels[:-1], "lonely"]  # a class of one image cannot be cross-validated
    assert find_wrong_labels(single, matrix, folds=5, min_prob=0.5, ratio=2.0) == []


# ---------------------------------------------------------------- real photos


@pytest.fixture(scope="module")
def fashion_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 Fashion-MNIST classes x 20 photos, 10 of them (5%) moved into another class."""
    from demo.fashion_mnist import fashion_mnist_dir, write_fashion_mnist

    try:
        fashion_mnist_dir(FASHION_CACHE)
    except UserError as err:
        pytest.skip(f"Fashion-MNIST unavailable (Debian dataset-fashion-mnist): {err}")
    root = tmp_path_factory.mktemp("fashion") / "raw"
    write_fashion_mnist(root, FASHION_CACHE, per_class=20)
    rng = np.random.default_rng(0)
    files = sorted(root.rglob("*.png"))
    classes = sorted(p.name for p in root.iterdir())
    for path in rng.choice(files, size=10, replace=False):
        other = rng.choice([c for c in classes if c != path.parent.name])
        shutil.move(path, root / other / f"moved_from_{path.parent.name}__{path.name}")
    return root


def test_wrong_label_finds_moved_fashion_mnist_photos(
    fashion_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stages import clean, detect, embed

    monkeypatch.chdir(tmp_path)
    p = load_params(overrides={"domain": "objects", "detect.device": "cpu", "embed.device": "cpu"})
    detect.run(p.detect, fashion_root, Path("faces"))
    embed.run(p.embed, Path("faces/manifest.csv"), Path("emb.npz"))
    clean.run(p.clean, Path("faces/manifest.csv"), Path("clean"), Path("emb.npz"))
    rejects = read_manifest(Path("clean/rejects.csv"))
    flagged = [r for r in rejects if r["reason"] == "wrong_label"]
    hits = [r for r in flagged if "moved_from_" in r["source"]]
    assert len(hits) >= 5  # at least half of the 10 moved photos
    assert len(hits) >= 0.8 * len(flagged)  # precision >= 0.8
    named_true_class = [r for r in hits if f"moved_from_{r['conflict_label']}__" in r["source"]]
    assert len(named_true_class) >= 0.7 * len(hits)  # conflict_label: where it belongs
    assert not [r for r in rejects if r["reason"] == "wrong_identity"]  # label checks only
    kept = read_manifest(Path("clean/manifest.csv"))
    assert len(kept) + len(rejects) == 200
