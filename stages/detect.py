"""detect: find one face per raw photo, align it on the eye line and crop it to size x size.

Every raw file ends in exactly one place: a crop listed in ``<out>/manifest.csv``
or a row in ``<out>/rejects.csv`` with a reason (scan's ``outside_root`` /
``no_class``, then ``unreadable``, ``too_large``, ``no_face``, ``low_prob``,
``multiple_faces``, ``too_small``, ``truncated_face``). Photos are decoded lazily,
one detection batch at a time, so memory stays flat however large the raw folder is.

Each crop row records how it was cut (``crop_matrix``, ``source_size``; see
``pipeline.crops``), so later stages know where the face is and which pixels are
padding, and the other faces seen in its photo (``other_faces``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.components.cropping import crop_face, crop_matrix
from pipeline.components.detectors import Face, FaceDetector, build_detector
from pipeline.components.likeness import Picture
from pipeline.core.config import DetectParams
from pipeline.core.crops import CropGeometry, outside_fraction
from pipeline.core.engines import current_engine
from pipeline.core.errors import UserError, nothing_to_do
from pipeline.core.failures import batch_or_each, failure_detail
from pipeline.core.files import (
    prepare_output_dir,
    remove_unlisted_files,
    sha256_bytes,
    write_listed_file,
)
from pipeline.core.images import ImageError, encode_jpeg, load_rgb
from pipeline.core.manifest import (
    empty_classes_report,
    reject,
    scan_image_folder,
    to_posix,
    write_rows,
)
from pipeline.core.parallel import parallel_map
from pipeline.core.report import StageReport
from pipeline.core.rows import FaceRow, ImageRow, Reason, Rejected

STAGE = "detect"


@dataclass(frozen=True)
class Decision:
    """What to do with one photo: the faces to crop, or why it is rejected."""

    faces: tuple[Face, ...] = ()
    reason: Reason | None = None
    detail: str = ""
    others: tuple[Face, ...] = ()  # faces seen (>= presence_prob) but not cropped


def run(params: DetectParams, raw_dir: Path, out_dir: Path) -> StageReport:
    """Detect, filter and crop the faces of every photo under ``raw_dir`` into ``out_dir``."""
    _refuse_overlap(raw_dir, out_dir)
    rows, rejects = scan_image_folder(raw_dir)
    n_files = len(rows) + len(rejects)
    if not n_files:
        raise nothing_to_do(STAGE, f"{raw_dir} holds no files; expected {raw_dir}/<class>/<photos>")
    prepare_output_dir(out_dir)
    detector = build_detector(params)  # here too: a bad name fails first
    writer = CropWriter(out_dir, params.multi_face)
    started = time.perf_counter()
    batches = [[(i, rows[i]) for i in b] for b in batched(size_order(rows), params.batch_size)]
    for found in _find_all(params, detector, batches):
        writer.add(found)
    seconds = max(time.perf_counter() - started, 1e-9)
    kept, detect_rejects = writer.results()
    rejects += detect_rejects
    remove_unlisted_files(out_dir, {Path(r.path) for r in kept}, {".jpg"})
    write_rows(out_dir / "rejects.csv", rejects)
    write_rows(out_dir / "manifest.csv", kept, header=FaceRow)  # last: run complete
    return StageReport.from_rows(
        STAGE, n_files, kept, rejects,
        photos_kept=len({r.source for r in kept}), **empty_classes_report(raw_dir),
        runtime={"seconds": round(seconds, 2), "photos_per_second": round(len(rows) / seconds, 2),
                 "faces_per_second": round(len(kept) / seconds, 2), "device": str(detector.device)},
    )  # fmt: skip


def _refuse_overlap(raw_dir: Path, out_dir: Path) -> None:
    """Raw photos are read-only, and a re-run deletes unlisted .jpg files under out_dir."""
    raw, out = raw_dir.resolve(), out_dir.resolve()
    if out.is_relative_to(raw) or raw.is_relative_to(out):
        raise UserError(
            f"output {out_dir} and raw folder {raw_dir} overlap; the raw folder is read-only "
            "and detect clears stale crops from its output: use separate folders"
        )


def size_order(rows: Sequence[ImageRow]) -> list[int]:
    """Row indices grouped by image size, read from file headers (nothing is decoded).

    The detector batches photos of equal size; folders interleave sizes and
    orientations, so grouping them first fills its batches. Outputs do not depend
    on this order (manifests are written in scan order), and a photo's faces do not
    depend on its batch-mates beyond float rounding (~1e-4 px, measured), far below
    the 0.1 px to which boxes are rounded before cropping.
    """
    sizes = [_header_size(Path(row.path)) for row in rows]
    return sorted(range(len(rows)), key=lambda i: (sizes[i], i))


def _header_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, ValueError, SyntaxError):
        return (0, 0)  # unreadable: decoding will reject it with the reason


def batched(items: Sequence[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def _find_all(
    params: DetectParams, detector: FaceDetector, batches: list[list[tuple[int, ImageRow]]]
) -> Iterator[list[Found]]:
    """Each batch's photos, found and cropped, in batch order: here, or on Ray's workers.

    Here, one process: the detector already runs on every core (torch threads).
    """
    spread = str(detector.device) == "cpu"  # a GPU detector stays on this machine
    here = not (spread and current_engine() == "ray")
    setup = (lambda: Finder(params, detector)) if here else partial(build_finder, params)
    return parallel_map(
        find_faces, batches, 1, STAGE, setup=setup, chunksize=1, unit="photos", weight=len,
        spread=spread,
    )  # fmt: skip


@dataclass(frozen=True)
class Crop:
    """One face cut from its photo and encoded; the driver names and writes it."""

    index: int  # the face's index in its photo
    data: bytes
    row: FaceRow  # every cell but ``path``


@dataclass(frozen=True)
class Found:
    """One photo's outcome: its crops, or the reject row saying why there are none."""

    index: int  # the photo's scan index
    row: ImageRow
    crops: tuple[Crop, ...] = ()
    rejected: Rejected | None = None


@dataclass(frozen=True)
class Finder:
    """A worker's state: the params and the detector, built once."""

    params: DetectParams
    detector: FaceDetector


def build_finder(params: DetectParams) -> Finder:
    return Finder(params, build_detector(params))


def find_faces(finder: Finder, batch: list[tuple[int, ImageRow]]) -> list[Found]:
    """Decode one batch of (scan index, row), detect all its photos in one call, crop."""
    params = finder.params
    found: list[Found] = []
    decoded: list[tuple[int, ImageRow, np.ndarray]] = []
    for i, row in batch:
        try:
            decoded.append((i, row, load_rgb(Path(row.path), params.max_pixels)))
        except ImageError as err:
            found.append(Found(i, row, rejected=reject(row, STAGE, err.reason, _hint(err))))
    images = [image for _, _, image in decoded]
    faces_of = batch_or_each(finder.detector.detect_batch, images) if decoded else []
    # A whole image (detector none) is the crop itself: no margin around it.
    margin = 0.0 if finder.detector.whole_image else params.margin
    for (i, row, image), faces in zip(decoded, faces_of, strict=True):
        try:
            found.append(_found(params, margin, i, row, image, faces))
        except UserError:
            raise
        except Exception as err:  # this photo fails, not the run
            rejected = reject(row, STAGE, Reason.PROCESSING_FAILED, failure_detail(err))
            found.append(Found(i, row, rejected=rejected))
    return found


def _found(
    params: DetectParams,
    margin: float,
    i: int,
    row: ImageRow,
    image: np.ndarray,
    faces: Sequence[Face] | Exception,
) -> Found:
    """Crop the faces ``decide`` keeps, or reject the photo (``faces``: the detector's error
    when it failed on this photo alone)."""
    if isinstance(faces, Exception):
        raise faces
    decision = decide(faces, params, (image.shape[1], image.shape[0]))
    if decision.reason:
        return Found(i, row, rejected=reject(row, STAGE, decision.reason, decision.detail))
    kept = decision.faces
    return Found(
        i,
        row,
        crops=tuple(_crop(params, margin, image, row, f, k, decision) for k, f in enumerate(kept)),
    )


def _hint(err: ImageError) -> str:
    if err.reason == Reason.TOO_LARGE:
        return f"{err.detail}; raise detect.max_pixels if it is genuine"
    return err.detail


def _crop(
    params: DetectParams,
    margin: float,
    image: np.ndarray,
    row: ImageRow,
    face: Face,
    index: int,
    decision: Decision,
) -> Crop:
    """Crop and encode one face, with its manifest row (all but the path)."""
    others = [f for f in (*decision.faces, *decision.others) if f is not face]
    face = rounded(face)  # the crop is rebuilt from exactly what the manifest records
    p = params
    height, width = image.shape[:2]
    inside = (width, height) if p.shift_inside else None
    geometry = CropGeometry(
        crop_matrix(face, p.size, margin, p.align, inside), (width, height), p.size
    )
    crop = crop_face(image, geometry.matrix, p.size, p.padding)
    data = encode_jpeg(crop, p.jpeg_quality)
    picture = Picture.of(crop, geometry.valid_mask(), geometry.face_box(face.box), geometry.scale)
    row = FaceRow(
        path="", label=row.label, source=row.source, sha256=sha256_bytes(data),
        source_sha256=row.sha256, box=face.box, landmarks=face.landmarks or None,
        prob=round(face.prob, 4), face_px=round(face.short_side), face_index=index,
        **geometry.cells(),  # type: ignore[arg-type]
        face_outside=round(outside_fraction(face.core_box(), width, height), 3),
        other_faces=tuple((*rounded(f).box, round(f.prob, 4)) for f in others),
        blur=round(picture.sharpness(), 2), phash=picture.hash(),
    )  # fmt: skip
    return Crop(index, data, row)


class CropWriter:
    """Names and writes the crops found, and keeps rows and rejects in scan order."""

    def __init__(self, out_dir: Path, multi_face: str) -> None:
        self.out_dir = out_dir
        self.multi_face = multi_face
        self._kept: dict[int, list[FaceRow]] = {}
        self._rejected: dict[int, Rejected] = {}
        self._names: set[Path] = set()

    def results(self) -> tuple[list[FaceRow], list[Rejected]]:
        """(kept rows, reject rows), each in the order of the scanned raw files."""
        kept = [row for i in sorted(self._kept) for row in self._kept[i]]
        return kept, [self._rejected[i] for i in sorted(self._rejected)]

    def add(self, batch: list[Found]) -> None:
        """Write one batch's crops (names are given in batch order, as they arrive)."""
        for found in batch:
            if found.rejected is not None:
                self._rejected[found.index] = found.rejected
            else:
                self._kept[found.index] = [self._write(found.row, crop) for crop in found.crops]

    def _write(self, source: ImageRow, crop: Crop) -> FaceRow:
        path = self._name(source, crop.index)
        write_listed_file(path, crop.data)
        return replace(crop.row, path=to_posix(path))

    def _name(self, row: ImageRow, index: int) -> Path:
        """``<label>/<stem>-<sha8>[_f<k>].jpg``; a counter only if two sources collide.

        Two files collide only when they share class, stem and content (x.jpg and
        x.jpeg with the same bytes); both must still get a crop of their own.
        """
        suffix = f"_f{index}" if self.multi_face == "all" else ""
        base = f"{Path(row.path).stem}-{row.sha256[:8]}{suffix}"
        path = self.out_dir / row.label / f"{base}.jpg"
        n = 1
        while path in self._names:
            n += 1
            path = self.out_dir / row.label / f"{base}~{n}.jpg"
        self._names.add(path)
        return path


def decide(faces: Sequence[Face], params: DetectParams, image_size: tuple[int, int]) -> Decision:
    """Apply min_prob, the multi-face policy, min_face_px and max_outside to one photo.

    Faces at or above ``presence_prob`` count as people in the photo even when they are
    too uncertain (below ``min_prob``) to be cropped: a half-turned second person still
    makes a group photo.
    """
    if not faces:
        return Decision(reason=Reason.NO_FACE, detail="no face found")
    present = sorted((f for f in faces if f.prob >= params.presence_prob), key=lambda f: -f.area)
    sure = [f for f in present if f.prob >= params.min_prob]
    if not sure:
        best = max(f.prob for f in faces)
        detail = f"best face probability {best:.3f} < min_prob {params.min_prob}"
        return Decision(reason=Reason.LOW_PROB, detail=detail)
    chosen = _apply_multi_face(present, sure, params)
    if isinstance(chosen, Decision):
        return chosen
    big = [f for f in chosen if f.short_side >= params.min_face_px]
    if not big:
        side = max(f.short_side for f in chosen)
        detail = f"face is {side:.0f} px (shorter side) < min_face_px {params.min_face_px}"
        return Decision(reason=Reason.TOO_SMALL, detail=detail)
    whole = [f for f in big if outside_fraction(f.core_box(), *image_size) <= params.max_outside]
    if not whole:
        share = min(outside_fraction(f.core_box(), *image_size) for f in big)
        detail = (
            f"{share:.0%} of the face (eyes, nose, mouth) is outside the photo "
            f"> max_outside {params.max_outside:.0%}"
        )
        return Decision(reason=Reason.TRUNCATED_FACE, detail=detail)
    return Decision(faces=tuple(whole), others=tuple(f for f in present if f not in whole))


def _apply_multi_face(
    present: list[Face], sure: list[Face], params: DetectParams
) -> list[Face] | Decision:
    if params.multi_face == "all":
        return sure
    kept, others = sure[0], [f for f in present if f is not sure[0]]
    if not others:
        return [kept]
    share = max(f.area for f in others) / kept.area
    detail = (
        f"{len(present)} faces with probability >= presence_prob {params.presence_prob}, "
        f"the next is {share:.0%} of the largest sure one"
    )
    if params.multi_face == "reject":
        return Decision(reason=Reason.MULTIPLE_FACES, detail=f"{detail} (multi_face=reject)")
    if share >= params.ambiguity_ratio:
        ratio = f"ambiguity_ratio {params.ambiguity_ratio:.0%}"
        return Decision(reason=Reason.MULTIPLE_FACES, detail=f"{detail}, >= {ratio}")
    return [kept]


def rounded(face: Face) -> Face:
    """Box and landmarks to 0.1 px and prob to 4 decimals, as stored in the manifest."""
    box = tuple(round(v, 1) for v in face.box)
    points = tuple((round(x, 1), round(y, 1)) for x, y in face.landmarks)
    return Face(box, points, round(face.prob, 4))  # type: ignore[arg-type]
