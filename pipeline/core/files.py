"""Writes that an interrupted run cannot leave half done, and content hashes.

Two ways to write, one rule: a file that is read on its own (a manifest, a model, a
report) is written atomically; a file listed by a manifest (a stage's image outputs)
may be written in place when it is new, because the manifest, written atomically and
last, is what says the folder is complete (``prepare_output_dir`` removes it first).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.core.errors import UserError

_CHUNK = 1 << 20


def _default_file_mode() -> int:
    """0o666 minus the umask: what open() would give, unlike mkstemp's private 0o600."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _default_file_mode()
_CREATE_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, _FILE_MODE)  # noqa: PTH101 - tmp is a str from mkstemp
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_listed_file(path: str | Path, data: bytes) -> None:
    """Write a file that the folder's manifest will list (see the module docstring).

    A new file is created in place: one directory operation instead of the temp file
    and rename of ``atomic_write_bytes`` (augment at 160 px measured 1.05x faster;
    BENCHMARKS.md). An interrupted write leaves a partial file only in a folder
    without a manifest, and the next run replaces it. An existing file is replaced atomically,
    never modified, so a copy that shares its inode (a DVC cache hardlink) is safe.
    Inside ``divert_listed_writes`` the file is collected instead (a Ray worker's).
    """
    if _diverted:
        _diverted[-1].append((str(path), data))
        return
    try:
        fd = os.open(path, _CREATE_NEW, 0o666)  # the umask applies, as for open()
    except FileExistsError:
        atomic_write_bytes(Path(path), data)
        return
    except FileNotFoundError:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, _CREATE_NEW, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
    except BaseException:
        Path(path).unlink(missing_ok=True)
        raise


_diverted: list[list[tuple[str, bytes]]] = []  # open divert_listed_writes() collections


@contextmanager
def divert_listed_writes() -> Iterator[list[tuple[str, bytes]]]:
    """Collect ``write_listed_file``'s (path, bytes) instead of writing them.

    A Ray worker may run on another machine: its files go back to the driver with its
    result, and the driver writes them where the manifest is (``engines.ray_map``).
    """
    collected: list[tuple[str, bytes]] = []
    _diverted.append(collected)
    try:
        yield collected
    finally:
        _diverted.pop()


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def remove_stale_temp_files(folder: Path) -> int:
    """Delete temp files an interrupted run left behind; returns how many."""
    removed = 0
    if folder.is_dir():
        for tmp in folder.rglob(".*.tmp"):
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed


OWNER_MARKER = ".fewshot-prep"


def prepare_output_dir(out: Path, marker: str = "manifest.csv") -> bool:
    """Claim ``out`` for a stage run; True when it holds outputs of an earlier run.

    A non-empty folder is ours only if it has the owner marker or the stage's
    ``marker`` file; any other might be the user's data, so we stop instead. The
    ``marker`` (the manifest, written last) is removed here, so its presence always
    means a complete run: an interrupted run leaves a claimed folder without it,
    which the next run finishes.
    """
    if out.exists() and not out.is_dir():
        raise UserError(f"output {out} exists and is not a folder")
    earlier = out.is_dir() and any(out.iterdir())
    if earlier and not ((out / marker).exists() or (out / OWNER_MARKER).exists()):
        raise UserError(
            f"output folder {out} is not empty and was not written by prep (no {marker}); "
            "choose an empty or new folder with --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(out)
    (out / marker).unlink(missing_ok=True)
    atomic_write_text(out / OWNER_MARKER, "written by fewshot-prep; safe to delete\n")
    return earlier


def remove_unlisted_files(out: Path, keep: set[Path], suffixes: set[str]) -> int:
    """Delete files with ``suffixes`` under ``out`` that the new manifest does not list.

    Keeps a re-run into the same folder from leaving outputs of the old run behind.
    """
    keep_absolute = {os.path.abspath(path) for path in keep}  # noqa: PTH100 - cheap, no stat
    removed = 0
    for file in out.rglob("*"):
        stale = file.suffix.lower() in suffixes and os.path.abspath(file) not in keep_absolute  # noqa: PTH100
        if stale and file.is_file():
            file.unlink()
            removed += 1
    return removed
