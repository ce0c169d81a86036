"""The contract between stages: CSV manifests, one row per image.

Paths are POSIX and relative to the working directory (the repo root under DVC).
Columns grow along the pipeline; ``COLUMN_ORDER`` keeps files readable and diffs
stable. A rejects manifest holds the input row plus ``reason`` (machine-readable)
and ``detail`` (for a person).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pipeline.core.files import atomic_write_text, sha256_file

Row = dict[str, str]

COLUMN_ORDER = [
    "path", "label", "source", "sha256", "source_sha256",
    "box", "landmarks", "prob", "face_px", "face_index",
    "crop_matrix", "source_size", "face_outside", "other_faces",
    "blur", "phash", "group",
    "split", "kind", "parent", "recipe", "variant", "params", "seed",
    "stage", "reason", "detail",
]  # fmt: skip

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}


class PathOutsideRootError(ValueError):
    """A manifest or folder entry points outside the dataset root."""


def columns_for(rows: Iterable[Row], extra: Iterable[str] = ()) -> list[str]:
    """Canonical column order first, then unknown columns alphabetically."""
    seen: set[str] = set(extra)
    for row in rows:
        seen.update(row)
    known = [c for c in COLUMN_ORDER if c in seen]
    return known + sorted(seen - set(known))


def write_manifest(path: Path, rows: list[Row], columns: list[str] | None = None) -> None:
    """Write rows atomically; missing cells are empty strings."""
    columns = columns or columns_for(rows)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n", extrasaction="raise")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: row.get(c, "") for c in columns})
    atomic_write_text(path, buffer.getvalue())


def read_manifest(path: Path) -> list[Row]:
    if not path.is_file():
        raise FileNotFoundError(f"manifest {path} does not exist: run the stage that writes it")
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def by_label(rows: Iterable[Row]) -> dict[str, list[Row]]:
    """Rows grouped by class, classes in sorted order, rows in input order."""
    groups: dict[str, list[Row]] = {}
    for row in rows:
        groups.setdefault(row["label"], []).append(row)
    return dict(sorted(groups.items()))


def reject(row: Row, stage: str, reason: str, detail: str) -> Row:
    """A rejects-manifest row: the input row plus why it stops here."""
    return {**row, "stage": stage, "reason": reason, "detail": detail}


def to_posix(path: Path) -> str:
    """Relative to the working directory when inside it, absolute otherwise.

    Symlinks are not followed: a row names the file the user put there.
    """
    absolute = Path(os.path.abspath(path))  # noqa: PTH100 - resolve() would follow links
    try:
        return absolute.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return absolute.as_posix()


def dumps(value: Any) -> str:
    """Compact, key-sorted JSON for manifest cells (stable across runs)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def ensure_inside(path: Path, root: Path) -> Path:
    """Resolve ``path`` (symlinks too) and refuse it when it leaves ``root``."""
    resolved = path.resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise PathOutsideRootError(f"{path} resolves to {resolved}, outside {root}")
    return resolved


def scan_image_folder(root: Path) -> tuple[list[Row], list[Row]]:
    """Every file under an ImageFolder ``root/<class>/...``: (rows, rejects).

    Nothing is skipped silently: files outside a class folder, symlinks that leave
    the root and unreadable entries come back as rejects with a reason. Content
    checks (is it really an image?) belong to the stage that decodes it.
    """
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder; expected {root}/<class>/<image files>")
    rows: list[Row] = []
    rejects: list[Row] = []
    for file in _walk_files(root):
        rel = file.relative_to(root)
        base = {"path": to_posix(file), "label": rel.parts[0] if len(rel.parts) > 1 else ""}
        base["source"] = base["path"]
        try:
            ensure_inside(file, root)
        except PathOutsideRootError as err:
            rejects.append(reject(base, "scan", "outside_root", str(err)))
            continue
        if not base["label"]:
            detail = "files must sit in a class folder: root/<class>/<file>"
            rejects.append(reject(base, "scan", "no_class", detail))
            continue
        try:
            base["sha256"] = sha256_file(file)
        except OSError as err:
            rejects.append(reject(base, "scan", "unreadable", f"cannot read: {err}"))
            continue
        rows.append(base)
    return rows, rejects


def _walk_files(root: Path) -> Iterator[Path]:
    """Files in a stable order; hidden folders are skipped, hidden files are not."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        here = Path(dirpath)
        for name in sorted(filenames):
            yield here / name
        for name in dirnames:
            if (here / name).is_symlink():
                yield here / name
