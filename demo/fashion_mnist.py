"""Real object photos offline: Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package.

Fashion-MNIST (Zalando Research, MIT licence; Xiao, Rasul & Vollgraf 2017): 70,000
28 x 28 grey photos of clothing in 10 classes, three of them footwear (sandal, sneaker,
ankle boot). Debian ships the idx files under ``/usr/share/datasets/fashion-mnist/``.
Nothing is redistributed here: the package is fetched with ``apt-get download`` and
unpacked with ``dpkg -x`` (no install, no root) into a cache folder, once, or read from a
system that has it installed. ``write_fashion_mnist`` writes a folder-per-class subset as
PNG files, upscaled (the pipeline's minimum image side and ImageNet networks want more than
28 px).
"""

from __future__ import annotations

import gzip
import shutil
import subprocess
import tempfile
from pathlib import Path

import cv2
import numpy as np

from pipeline.core.errors import UserError
from pipeline.core.files import atomic_write_bytes
from pipeline.core.images import encode_png

PACKAGE = "dataset-fashion-mnist"
INSTALLED = Path("/usr/share/datasets/fashion-mnist")
FILES = {
    split: (f"{split}-images-idx3-ubyte.gz", f"{split}-labels-idx1-ubyte.gz")
    for split in ("train", "t10k")
}
# Folder names of the 10 classes, in label order (Fashion-MNIST's README).
CLASSES = (
    "t_shirt_top", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle_boot",
)  # fmt: skip
FOOTWEAR = ("sandal", "sneaker", "ankle_boot")


def fashion_mnist_dir(cache: Path) -> Path:
    """A folder with the four idx files: the installed package's, else ``cache``'s, fetched
    there with apt-get download + dpkg -x when missing."""
    names = [name for pair in FILES.values() for name in pair]
    for folder in (INSTALLED, cache):
        if all((folder / name).is_file() for name in names):
            return folder
    with tempfile.TemporaryDirectory() as tmp:
        _download_and_unpack(Path(tmp))
        found = Path(tmp) / "x" / INSTALLED.relative_to("/")
        cache.mkdir(parents=True, exist_ok=True)
        for name in names:
            shutil.copyfile(found / name, cache / name)
    return cache


def _download_and_unpack(tmp: Path) -> None:
    def run(command: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(command, cwd=tmp, capture_output=True, text=True, check=False)

    try:
        fetched = run(["apt-get", "download", PACKAGE])
        debs = sorted(tmp.glob(f"{PACKAGE}_*.deb"))
        if fetched.returncode != 0 or not debs:
            raise UserError(
                f"could not fetch Debian's {PACKAGE} (no apt, or no network?): "
                f"{fetched.stderr.strip()[-300:]}"
            )
        unpacked = run(["dpkg", "-x", str(debs[0]), "x"])
    except FileNotFoundError as err:  # no apt-get / dpkg on this system
        raise UserError(f"fetching {PACKAGE} needs apt-get and dpkg: {err}") from None
    if unpacked.returncode != 0:
        raise UserError(f"dpkg -x {debs[0].name} failed: {unpacked.stderr.strip()[-300:]}")


def read_idx(path: Path) -> np.ndarray:
    """An idx file (gzipped): uint8 array of the shape its header gives."""
    data = gzip.decompress(path.read_bytes())
    if data[:2] != b"\0\0" or data[2] != 0x08:
        raise UserError(f"{path} is not an idx file of unsigned bytes")
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims)
    if body.size != int(np.prod(shape)):
        raise UserError(f"{path} is truncated: {body.size} bytes for shape {shape}")
    return body.reshape(shape)


def load_split(folder: Path, split: str = "t10k") -> tuple[np.ndarray, np.ndarray]:
    """(images n x 28 x 28, labels n) of the ``train`` or ``t10k`` (test) split."""
    images, labels = FILES[split]
    return read_idx(folder / images), read_idx(folder / labels)


def pick(labels: np.ndarray, classes: list[int], per_class: int, skip: int = 0) -> list[int]:
    """Indices of the first ``per_class`` images of each class, after its first ``skip``:
    deterministic, and disjoint subsets for different ``skip``."""
    chosen = []
    for label in classes:
        where = np.flatnonzero(labels == label)[skip : skip + per_class]
        if len(where) < per_class:
            raise UserError(f"class {CLASSES[label]!r} has fewer than {skip + per_class} images")
        chosen += [int(i) for i in where]
    return chosen


def to_rgb(image: np.ndarray, size: int) -> np.ndarray:
    """A 28 x 28 grey image as ``size`` x ``size`` RGB (bicubic upscaling)."""
    big = cv2.resize(image, (size, size), interpolation=cv2.INTER_CUBIC)
    return np.repeat(big[:, :, None], 3, axis=2)


def class_ids(names: list[str] | None) -> list[int]:
    """Label ids of class folder names (all 10 when None); ``footwear`` names the three."""
    if not names:
        return list(range(len(CLASSES)))
    if names == ["footwear"]:
        names = list(FOOTWEAR)
    unknown = [n for n in names if n not in CLASSES]
    if unknown:
        raise UserError(f"unknown Fashion-MNIST class {unknown[0]!r}; known: {', '.join(CLASSES)}")
    return [CLASSES.index(n) for n in names]


def write_fashion_mnist(
    out: Path, cache: Path, per_class: int, classes: list[str] | None = None,
    size: int = 112, split: str = "t10k", skip: int = 0,
) -> int:  # fmt: skip
    """Write ``per_class`` images of each class as ``out/<class>/<split>_<index>.png``."""
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} is not empty; choose a new folder")
    images, labels = load_split(fashion_mnist_dir(cache), split)
    chosen = pick(labels, class_ids(classes), per_class, skip)
    for i in chosen:
        path = out / CLASSES[int(labels[i])] / f"{split}_{i:05d}.png"
        atomic_write_bytes(path, encode_png(to_rgb(images[i], size)))
    return len(chosen)
