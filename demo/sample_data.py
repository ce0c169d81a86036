"""`prep sample-data`: a small, deliberately dirty face dataset with ground truth.

Identities are synthetic: a DCGAN (gan-face-generate, trained on the synthetic
DigiFace1M faces) turns one latent vector per class, plus small jitter per
photo, into a consistent 64x64 face. Each photo pastes that face, upscaled to a
realistic size, onto a generated background. Then faults are injected on top
of the clean photos, and every file written is listed in a ground-truth JSON
with the stage and reason that must reject it, so tests can check that the
pipeline catches exactly the injected faults.

Every photo is checked with the pipeline's own MTCNN detector while it is made
(a clean face must be found confidently, a "no face" photo must have none, a
tiny face must still be found...) and redrawn from the next derived seed if
not, so the ground truth holds for any seed rather than by luck.

Here: the ground truth and the plan of faults. The faces and photos are made in
synthetic_faces.py, checked in photo_maker.py; the faults are made in faults.py.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from demo.faults import FAULT_MAKERS, cmyk, exif_rotated, near_duplicate, png16
from demo.photo_maker import PhotoMaker
from demo.synthetic_faces import LATENT, load_generator, render_face
from pipeline.components.detectors import torch_threads
from pipeline.core.config import SampleDataParams
from pipeline.core.errors import UserError
from pipeline.core.files import atomic_write_bytes, atomic_write_text
from pipeline.core.report import StageReport
from pipeline.core.seeds import derive_seed

# Names that tests and benchmarks use through this module, wherever they are defined.
__all__ = [
    "FAULTS", "LATENT", "PhotoMaker", "TruthEntry", "cmyk", "exif_rotated", "load_generator",
    "plan_faults", "png16", "render_face", "run",
]  # fmt: skip

# (fault kind, stage that must reject it, reason); a None stage means "must be kept".
FAULTS: list[tuple[str, str | None, str | None]] = [
    ("exact_duplicate", "clean", "exact_duplicate"),
    ("near_duplicate", "clean", "near_duplicate"),
    ("blurred", "clean", "blurry"),
    ("no_face", "detect", "no_face"),
    ("two_faces", "detect", "multiple_faces"),
    ("tiny_face", "detect", "too_small"),
    ("other_class_face", "clean", "wrong_identity"),
    ("truncated", "detect", "unreadable"),
    ("zero_byte", "detect", "unreadable"),
    ("non_image", "detect", "unreadable"),
    ("exif_rotated", None, None),
    ("grayscale", None, None),
    ("png_alpha", None, None),
    ("cmyk", None, None),
    ("png16", None, None),
]
# Kinds injected a second time (in another class) when there are enough classes.
REPEATED = ("exact_duplicate", "near_duplicate", "blurred", "no_face")
PNG_KINDS = ("png_alpha", "png16")


@dataclass(frozen=True)
class TruthEntry:
    """One file written: which fault it carries and who must reject it, for what reason.

    ``identities`` lists the classes whose faces appear in the file (beyond the
    brief's fields; it tells a test which identity an other_class_face shows).
    """

    file: str
    label: str
    fault: str | None = None
    of: str | None = None
    expect_stage: str | None = None
    expect_reason: str | None = None
    identities: tuple[str, ...] = ()


@dataclass
class Written:
    """Files written so far: bytes by relative path, and clean photos a fault already copies."""

    out_dir: Path
    data: dict[str, bytes] = field(default_factory=dict)
    clean: list[str] = field(default_factory=list)
    copied: set[str] = field(default_factory=set)

    def add(self, entry: TruthEntry, data: bytes) -> TruthEntry:
        atomic_write_bytes(self.out_dir / entry.file, data)
        self.data[entry.file] = data
        if entry.fault is None:
            self.clean.append(entry.file)
        return entry


def run(params: SampleDataParams, seed: int, out_dir: Path, truth_path: Path) -> StageReport:
    """Write ``params.classes`` x ``params.per_class`` photos plus faults, and the truth JSON."""
    _refuse_non_empty(out_dir, truth_path)
    classes = [f"id{c:02d}" for c in range(params.classes)]
    written = Written(out_dir)
    # One thread: the work is many small calls, which extra threads slow down on a busy machine.
    with torch_threads(1):
        maker = PhotoMaker(params, seed)
        entries = [written.add(entry, data) for entry, data in _clean_photos(maker, classes)]
        for kind, label, index in plan_faults(classes):
            entries.append(written.add(*_make_fault(maker, classes, written, kind, label, index)))
    entries.sort(key=lambda e: e.file)
    truth = {"seed": seed, "classes": classes, "files": [asdict(e) for e in entries]}
    atomic_write_text(truth_path, json.dumps(truth, indent=2, ensure_ascii=False) + "\n")
    faults = Counter(e.fault for e in entries if e.fault)
    extra = {"files": len(entries), "clean_photos": len(entries) - sum(faults.values())}
    return StageReport("sample_data", 0, len(entries), extra={**extra, "faults": dict(faults)})


def _refuse_non_empty(out_dir: Path, truth_path: Path) -> None:
    """Never mix generated photos with existing files (they may be the user's data)."""
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise UserError(f"{out_dir} already exists and is not empty; remove it or pick a new path")
    if truth_path.resolve().is_relative_to(out_dir.resolve()):
        raise UserError(
            f"the truth file {truth_path} must be outside {out_dir} (it is not a photo)"
        )


def photo_name(index: int) -> str:
    """Mostly camera-like names; some with spaces and non-ASCII, as real folders have."""
    if index % 4 == 3:
        return f"photo {index:02d} é.jpg"
    if index % 5 == 1:
        return f"IMG {index:04d} (Zoë).jpeg"
    return f"IMG_{index:04d}.jpg"


def _clean_photos(maker: PhotoMaker, classes: list[str]) -> list[tuple[TruthEntry, bytes]]:
    photos = []
    for c, label in enumerate(classes):
        for i in range(maker.params.per_class):
            data = maker.clean_jpeg(c, f"{label}/clean/{i}")
            photos.append(
                (TruthEntry(f"{label}/{photo_name(i)}", label, identities=(label,)), data)
            )
    return photos


def plan_faults(classes: list[str]) -> list[tuple[str, str, int]]:
    """(kind, class, index within the class) per fault: spread over classes, once or twice each."""
    n = len(classes)
    kinds = [kind for kind, _, _ in FAULTS]
    plan = [(kind, classes[k % n]) for k, kind in enumerate(kinds)]
    if n >= 6:
        plan += [(kind, classes[(kinds.index(kind) + n // 2) % n]) for kind in REPEATED]
    counts: Counter[str] = Counter()
    placed = []
    for kind, label in plan:
        placed.append((kind, label, counts[label]))
        counts[label] += 1
    return placed


def _make_fault(
    maker: PhotoMaker, classes: list[str], written: Written, kind: str, label: str, index: int
) -> tuple[TruthEntry, bytes]:
    c = classes.index(label)
    other = classes[(c + 1) % len(classes)]
    key = f"{label}/fault/{kind}/{index}"
    suffix = ".png" if kind in PNG_KINDS else ".jpg"
    name = f"{label}/IMG_{maker.params.per_class + index:04d}{suffix}"
    stage, reason = next((s, r) for k, s, r in FAULTS if k == kind)
    of = None
    if kind == "exact_duplicate":
        of = _pick_source(written, label, derive_seed(maker.seed, key))
        data = written.data[of]
    elif kind == "near_duplicate":
        of = _stable_source(maker, written, label)
        data = near_duplicate(written.data[of])
    else:
        data = FAULT_MAKERS[kind](maker, c, classes.index(other), key)
    shown = {"two_faces": (label, other), "other_class_face": (other,)}
    no_face = ("no_face", "truncated", "zero_byte", "non_image")
    identities = shown.get(kind, () if kind in no_face else (label,))
    return TruthEntry(name, label, kind, of, stage, reason, identities), data


def _candidates(written: Written, label: str) -> list[str]:
    """Clean photos of the class that no other fault copies yet."""
    per_class = [f for f in written.clean if f.startswith(f"{label}/")]
    return [f for f in per_class if f not in written.copied] or per_class


def _pick_source(written: Written, label: str, seed: int) -> str:
    candidates = _candidates(written, label)
    choice = candidates[int(np.random.default_rng(seed).integers(len(candidates)))]
    written.copied.add(choice)
    return choice


def _stable_source(maker: PhotoMaker, written: Written, label: str) -> str:
    """The clean photo whose face MTCNN finds in the same place after the near-dup edit.

    MTCNN boxes jitter by up to ~15% of the face between a photo and its resized
    copy (the image pyramid samples other scales), and the crops then differ by
    more than re-encoding alone would make them: on 96 photos, 10 near-duplicate
    crop pairs were over 8 bits apart in a 64-bit perceptual hash. The fault is
    there to test duplicate detection, not detector jitter, so it copies the most
    stable of (up to) six photos.
    """
    candidates = _candidates(written, label)[:6]  # each costs two detections
    shifts = [maker.detection_shift(written.data[f], near_duplicate) for f in candidates]
    choice = candidates[int(np.argmin(shifts))]
    written.copied.add(choice)
    return choice
