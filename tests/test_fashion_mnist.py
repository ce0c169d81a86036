"""demo/fashion_mnist.py without the package: idx files, subsets, class names (offline)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from demo.fashion_mnist import CLASSES, class_ids, pick, read_idx, to_rgb
from pipeline.core.errors import UserError


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape
    )
    return gzip.compress(header + array.astype(np.uint8).tobytes())


def test_idx_files_read_back_and_truncation_is_refused(tmp_path: Path) -> None:
    images = np.arange(3 * 28 * 28, dtype=np.int64).reshape(3, 28, 28) % 256
    (tmp_path / "x.gz").write_bytes(idx_bytes(images))
    assert np.array_equal(read_idx(tmp_path / "x.gz"), images)
    (tmp_path / "short.gz").write_bytes(gzip.compress(gzip.decompress(idx_bytes(images))[:-5]))
    with pytest.raises(UserError, match="truncated"):
        read_idx(tmp_path / "short.gz")
    (tmp_path / "float.gz").write_bytes(gzip.compress(b"\0\0\x0d\x01" + (4).to_bytes(4, "big")))
    with pytest.raises(UserError, match="unsigned bytes"):
        read_idx(tmp_path / "float.gz")


def test_subsets_are_deterministic_disjoint_and_named() -> None:
    labels = np.array([0, 1, 0, 1, 0, 1, 0, 1])
    first, second = pick(labels, [0, 1], 2), pick(labels, [0, 1], 2, skip=2)
    assert first == [0, 2, 1, 3] and second == [4, 6, 5, 7]
    with pytest.raises(UserError, match="fewer than 5"):
        pick(labels, [0], 5)
    assert [CLASSES[i] for i in class_ids(["footwear"])] == ["sandal", "sneaker", "ankle_boot"]
    assert class_ids(None) == list(range(10))
    with pytest.raises(UserError, match="unknown Fashion-MNIST class 'shoe'"):
        class_ids(["shoe"])
    rgb = to_rgb(np.full((28, 28), 200, dtype=np.uint8), 112)
    assert rgb.shape == (112, 112, 3) and int(rgb.min()) == int(rgb.max()) == 200
