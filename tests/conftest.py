"""Shared fixtures. Tests run offline, on CPU, from any working directory."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from pipeline.images import encode_jpeg

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
