"""A tiny, easily separable image set with split and augment manifests, for train / evaluate.

Each class is a base colour plus noise, so a linear probe on any sensible backbone separates
them; paths are relative to the working directory, as in the pipeline.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.core.files import sha256_file
from pipeline.core.images import encode_jpeg
from pipeline.core.manifest import Row, write_manifest

COLOURS = [(220, 40, 40), (40, 200, 60), (40, 60, 220), (230, 220, 40)]


def make_dataset(
    root: Path, classes: int = 3, train: int = 2, val: int = 1, test: int = 2, size: int = 32,
    copies: int = 2, seed: int = 0,
) -> tuple[Path, Path]:  # fmt: skip
    """Write images and (split manifest, augment manifest) under ``root`` (relative paths)."""
    rng = np.random.default_rng(seed)
    rows: list[Row] = []
    for c in range(classes):
        parts = ["train"] * train + ["val"] * val + ["test"] * test
        for i, part in enumerate(parts):
            path = root / "faces" / f"class{c}" / f"{i}.jpg"
            rows.append(_write(path, COLOURS[c % len(COLOURS)], size, rng, f"class{c}", part))
    augmented = []
    for row in (r for r in rows if r["split"] == "train"):
        augmented.append({**row, "kind": "original", "parent": row["path"]})
        for k in range(1, copies):
            path = root / "augmented" / f"{Path(row['path']).stem}_{row['label']}_{k}.jpg"
            extra = _write(path, COLOURS[int(row["label"][5:]) % 4], size, rng, row["label"])
            augmented.append({**extra, "kind": "augmented", "parent": row["path"]})
    split_manifest, aug_manifest = (
        root / "split" / "manifest.csv",
        root / "augmented" / "manifest.csv",
    )
    write_manifest(split_manifest, rows)
    write_manifest(aug_manifest, augmented)
    return split_manifest, aug_manifest


def _write(
    path: Path, colour: tuple[int, int, int], size: int, rng: np.random.Generator, label: str,
    split: str = "train",
) -> Row:  # fmt: skip
    pixels = np.clip(np.array(colour) + rng.normal(0, 25, (size, size, 3)), 0, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_jpeg(pixels.astype(np.uint8), 90))
    return {"path": path.as_posix(), "label": label, "sha256": sha256_file(path), "split": split}
