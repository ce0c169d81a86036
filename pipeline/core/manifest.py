"""The contract between stages: CSV manifests, one row per image.

Paths are POSIX and relative to the working directory (the repo root under DVC). Stages read
and write typed rows (``pipeline.core.rows``: one class per stage's row, parsed once):
``read_rows`` / ``write_rows``. ``read_manifest`` / ``write_manifest`` are the plain CSV
underneath, cells as strings, for tools that take any manifest (the contact sheets) and for
tests. A rejects manifest holds each input row plus ``stage``, ``reason`` (a ``Reason``) and
``detail`` (for a person).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from pipeline.core.files import atomic_write_text, sha256_file
from pipeline.core.rows import (
    REJECT_COLUMNS,
    AugmentedRow,
    ImageRow,
    Reason,
    Rejected,
    column_order,
    columns_of,
    format_row,
    parse_row,
)

Row = dict[str, str]  # a CSV row as written: column -> cell
R = TypeVar("R", bound=ImageRow)

# Every column the pipeline writes, in the order the row classes declare them.
COLUMN_ORDER = [*columns_of(AugmentedRow), *REJECT_COLUMNS]

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


def read_rows(path: Path, cls: type[R]) -> list[R]:
    """A manifest's rows as ``cls``, every cell parsed once."""
    return [parse_row(cls, cells) for cells in read_manifest(path)]  # type: ignore[misc]


def write_rows(
    path: Path, rows: Sequence[ImageRow | Rejected], header: type[ImageRow] | None = None
) -> None:
    """Write typed rows atomically; ``header`` gives an empty manifest its columns."""
    columns = column_order(rows, header)
    write_manifest(path, [format_row(row) for row in rows], columns)


def by_label(rows: Iterable[R]) -> dict[str, list[R]]:
    """Rows grouped by class, classes in sorted order, rows in input order."""
    groups: dict[str, list[R]] = {}
    for row in rows:
        groups.setdefault(row.label, []).append(row)
    return dict(sorted(groups.items()))


def reject(
    row: ImageRow, stage: str, reason: Reason | str, detail: str, other: ImageRow | None = None
) -> Rejected:
    """A rejects-manifest row: the input row plus why it stops here (and the other image)."""
    return Rejected(
        row=row, stage=stage, reason=Reason(reason), detail=detail,
        conflict_with=other.path if other else "", conflict_label=other.label if other else "",
    )  # fmt: skip


def to_posix(path: Path) -> str:
    """Relative to the working directory when inside it, absolute otherwise.

    Symlinks are not followed: a row names the file the user put there.
    """
    absolute = Path(os.path.abspath(path))  # noqa: PTH100 - resolve() would follow links
    try:
        return absolute.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return absolute.as_posix()


def ensure_inside(path: Path, root: Path) -> Path:
    """Resolve ``path`` (symlinks too) and refuse it when it leaves ``root``."""
    resolved = path.resolve()
    if not resolved.is_relative_to(root.resolve()):
        # Paths as manifests write them, so the detail is the same whether the folder was
        # given as a relative or an absolute path.
        raise PathOutsideRootError(
            f"{to_posix(path)} resolves to {to_posix(resolved)}, outside {to_posix(root)}"
        )
    return resolved


def scan_image_folder(root: Path) -> tuple[list[ImageRow], list[Rejected]]:
    """Every file under an ImageFolder ``root/<class>/...``: (rows, rejects).

    Nothing is skipped silently: files outside a class folder, symlinks that leave
    the root and unreadable entries come back as rejects with a reason. Content
    checks (is it really an image?) belong to the stage that decodes it.
    """
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder; expected {root}/<class>/<image files>")
    rows: list[ImageRow] = []
    rejects: list[Rejected] = []
    for file in _walk_files(root):
        rel = file.relative_to(root)
        path = to_posix(file)
        row = ImageRow(path=path, label=rel.parts[0] if len(rel.parts) > 1 else "", source=path)
        try:
            ensure_inside(file, root)
        except PathOutsideRootError as err:
            rejects.append(reject(row, "scan", Reason.OUTSIDE_ROOT, str(err)))
            continue
        if not row.label:
            detail = "files must sit in a class folder: root/<class>/<file>"
            rejects.append(reject(row, "scan", Reason.NO_CLASS, detail))
            continue
        try:
            row.sha256 = sha256_file(file)
        except OSError as err:
            rejects.append(reject(row, "scan", Reason.UNREADABLE, f"cannot read: {err}"))
            continue
        rows.append(row)
    return rows, rejects


def empty_class_folders(root: Path) -> list[str]:
    """Class folders of an ImageFolder with no file anywhere inside (hidden ones aside).

    They produce no row, so no manifest or rejects file would ever mention them: a class the
    user meant to have would vanish without a trace.
    """
    return sorted(
        folder.name
        for folder in root.iterdir()
        if folder.is_dir() and not folder.is_symlink() and not folder.name.startswith(".")
        and next(_walk_files(folder), None) is None
    )  # fmt: skip


def empty_classes_report(root: Path) -> dict[str, list[str]]:
    """``{"empty_classes": [...]}`` for a stage report when an ImageFolder has some, else {}."""
    empty = empty_class_folders(root)
    return {"empty_classes": empty} if empty else {}


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
