"""The detect stage and the MTCNN detector, checked against the sample's ground truth."""

from __future__ import annotations

import json
import math
import shutil
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import SampleFaces, SampleRaw, tree_digest
from PIL import Image, ImageOps

from pipeline.components.cropping import crop_face, crop_matrix
from pipeline.components.detectors import (
    DETECTORS,
    Face,
    MtcnnDetector,
    eye_angle,
    plan_buckets,
    torch_threads,
)
from pipeline.core.config import DetectParams
from pipeline.core.crops import face_box_in_crop
from pipeline.core.errors import UserError
from pipeline.core.files import sha256_file
from pipeline.core.images import load_rgb
from pipeline.core.manifest import read_manifest
from pipeline.core.params import load_params
from pipeline.core.rows import FaceRow, ImageRow, parse_row
from stages import detect
from stages.detect import decide

# Clean photos (and odd formats) detect may wrongly reject. The generator checks each
# photo with this very detector, so none should be; a failure here is a real regression.
CLEAN_REJECT_TOLERANCE = 0


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    """The test machine is shared: many small MTCNN calls run faster on one thread there."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def mtcnn() -> MtcnnDetector:
    return MtcnnDetector("cpu", max_side=1024)


def params(**changes: object) -> DetectParams:
    return load_params().detect.model_copy(update={"device": "cpu", **changes})


def raw_rel(path: str, sample: SampleRaw) -> str:
    return Path(path).resolve().relative_to(sample.root.resolve()).as_posix()


def outcomes(faces: SampleFaces) -> tuple[dict[str, str], dict[str, int]]:
    """(raw file -> reject reason, raw file -> number of crops kept)."""
    rejects = {raw_rel(r["path"], faces.raw): r["reason"] for r in read_manifest(faces.rejects)}
    kept: dict[str, int] = {}
    for row in read_manifest(faces.manifest):
        key = raw_rel(row["source"], faces.raw)
        kept[key] = kept.get(key, 0) + 1
    return rejects, kept


def copy_entries(sample: SampleRaw, entries: list[dict[str, object]], root: Path) -> Path:
    for entry in entries:
        target = root / str(entry["file"])
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sample.path(entry), target)
    return root


# ---------------------------------------------------------------- against the ground truth


def test_detect_faults_rejected_with_exactly_the_expected_reason(sample_faces: SampleFaces) -> None:
    rejects, _ = outcomes(sample_faces)
    expected = sample_faces.raw.entries(expect_stage="detect")
    assert {e["fault"] for e in expected} == {
        "no_face", "two_faces", "tiny_face", "truncated", "zero_byte", "non_image",
    }  # fmt: skip
    for entry in expected:
        assert rejects.get(entry["file"]) == entry["expect_reason"], entry


def test_clean_photos_and_later_faults_pass_detect(sample_faces: SampleFaces) -> None:
    rejects, kept = outcomes(sample_faces)
    passing = [e for e in sample_faces.raw.truth["files"] if e["expect_stage"] != "detect"]
    wrongly = [e["file"] for e in passing if e["file"] in rejects]
    assert len(wrongly) <= CLEAN_REJECT_TOLERANCE, wrongly
    assert all(kept.get(e["file"]) == 1 for e in passing if e["file"] not in rejects)


def test_odd_formats_are_kept(sample_faces: SampleFaces) -> None:
    _, kept = outcomes(sample_faces)
    for kind in ("exif_rotated", "grayscale", "png_alpha", "cmyk", "png16"):
        (entry,) = sample_faces.raw.entries(fault=kind)
        assert kept.get(entry["file"]) == 1, kind


def test_every_raw_file_accounted_for_exactly_once(sample_faces: SampleFaces) -> None:
    rejects, kept = outcomes(sample_faces)
    files = {e["file"] for e in sample_faces.raw.truth["files"]}
    assert not set(rejects) & set(kept)
    assert set(rejects) | set(kept) == files
    report = sample_faces.report
    assert report["in"] == len(files)
    assert report["kept"] + report["rejected"] == len(files)  # multi_face=largest: 1 crop each
    assert report["rejected_by_reason"] == {
        "multiple_faces": 1, "no_face": 1, "too_small": 1, "unreadable": 3,
    }  # fmt: skip
    assert sample_faces.runtime["photos_per_second"] > 0 and sample_faces.runtime["device"]
    assert not {"seconds", "photos_per_second", "faces_per_second", "device"} & set(report)


def test_manifest_rows_describe_their_crops(sample_faces: SampleFaces) -> None:
    rows = read_manifest(sample_faces.manifest)
    assert list(rows[0]) == [
        "path", "label", "source", "sha256", "source_sha256",
        "box", "landmarks", "prob", "face_px", "face_index",
        "crop_matrix", "source_size", "face_outside", "other_faces", "blur", "phash",
    ]  # fmt: skip
    p = params()
    for row in rows:
        crop = Path(row["path"])
        assert crop.parent == sample_faces.out / row["label"]
        assert crop.name.endswith(f"-{row['source_sha256'][:8]}.jpg")
        assert sha256_file(crop) == row["sha256"]
        assert sha256_file(Path(row["source"])) == row["source_sha256"]
        with Image.open(crop) as image:
            assert image.size == (p.size, p.size) and image.format == "JPEG"
        box = json.loads(row["box"])
        landmarks = json.loads(row["landmarks"])
        assert len(box) == 4 and np.shape(landmarks) == (5, 2)
        assert float(row["prob"]) >= p.min_prob
        assert int(row["face_px"]) == round(min(box[2] - box[0], box[3] - box[1]))
        assert int(row["face_px"]) >= p.min_face_px
        assert row["face_index"] == "0"
        # the recorded geometry puts the whole face box inside the crop
        x1, y1, x2, y2 = face_box_in_crop(parse_row(FaceRow, row), p.size)
        assert -0.5 <= x1 < x2 <= p.size + 0.5 and -0.5 <= y1 < y2 <= p.size + 0.5
        with Image.open(Path(row["source"])) as photo:
            assert json.loads(row["source_size"]) == list(ImageOps.exif_transpose(photo).size)
        assert 0.0 <= float(row["face_outside"]) <= p.max_outside
        assert json.loads(row["other_faces"]) == []  # one face per clean sample photo
    assert sorted(p.name for p in sample_faces.out.rglob("*.jpg")) == sorted(
        Path(r["path"]).name for r in rows
    )


def test_rejects_carry_reason_and_detail(sample_faces: SampleFaces) -> None:
    for row in read_manifest(sample_faces.rejects):
        assert row["stage"] == "detect" and row["reason"] and row["detail"]
        assert row["sha256"] == sha256_file(Path(row["path"]))
    two = next(r for r in read_manifest(sample_faces.rejects) if r["reason"] == "multiple_faces")
    assert "2 faces with probability >= presence_prob" in two["detail"]


def test_raw_folder_is_never_written(sample_faces: SampleFaces) -> None:
    assert tree_digest(sample_faces.raw.root) == sample_faces.raw_tree_before


def test_rerun_is_byte_identical_and_removes_stale_crops(
    sample_raw: SampleRaw, sample_faces: SampleFaces, tmp_path: Path
) -> None:
    raw = copy_entries(sample_raw, sample_raw.entries(label="id00"), tmp_path / "raw")
    out = tmp_path / "faces"
    detect.run(params(), raw, out)
    first = tree_digest(out)
    detect.run(params(), raw, out)
    assert tree_digest(out) == first  # same input, same bytes, manifests included
    (raw / "id00" / "IMG_0000.jpg").unlink()
    (out / "id00" / "leftover.jpg").write_bytes(b"old")
    detect.run(params(), raw, out)
    crops = sorted(k for k in tree_digest(out) if k.endswith(".jpg"))
    assert crops == sorted(k for k in first if k.endswith(".jpg") and "IMG_0000-" not in k)
    # Other batch-mates (the shared run batched all classes together): same faces found.
    # Boxes are compared, not bytes: batch composition can change float rounding in
    # the detector (~1e-4 px measured), which could, rarely, move a 0.1 px rounding.
    shared = {raw_rel(r["source"], sample_raw): r for r in read_manifest(sample_faces.manifest)}
    for row in read_manifest(out / "manifest.csv"):
        other = shared[Path(row["source"]).resolve().relative_to(raw.resolve()).as_posix()]
        assert json.loads(row["box"]) == pytest.approx(json.loads(other["box"]), abs=0.15)


# ---------------------------------------------------------------- policies and geometry


def face(x: float, y: float, side: float, prob: float = 0.99, tilt: float = 0.0) -> Face:
    eye_y = y + side * 0.4
    left, right = (x + side * 0.3, eye_y), (x + side * 0.7, eye_y + side * 0.4 * tilt)
    rest = (
        (x + side / 2, y + side * 0.6),
        (x + side * 0.35, y + side * 0.8),
        (x + side * 0.65, y + side * 0.8),
    )
    return Face((x, y, x + side, y + side), (left, right, *rest), prob)


@pytest.mark.parametrize(
    ("policy", "ratio", "faces", "expected"),
    [
        ("largest", 0.5, [face(0, 0, 100), face(200, 0, 80)], "multiple_faces"),  # 64% >= 50%
        ("largest", 0.5, [face(0, 0, 100), face(200, 0, 60)], 1),  # 36%: the largest is kept
        ("reject", 0.5, [face(0, 0, 100), face(200, 0, 30)], "multiple_faces"),
        ("all", 0.5, [face(0, 0, 100), face(200, 0, 80)], 2),
        ("all", 0.5, [face(0, 0, 100), face(200, 0, 30)], 1),  # the 30 px face is too small
        ("largest", 0.5, [face(0, 0, 100, prob=0.5)], "low_prob"),
        ("largest", 0.5, [face(0, 0, 100), face(200, 0, 90, prob=0.5)], 1),  # below presence
        # a half-seen second person (the 0.885 and 0.712) still makes a group photo
        ("largest", 0.5, [face(0, 0, 100), face(200, 0, 90, prob=0.885)], "multiple_faces"),
        ("reject", 0.5, [face(0, 0, 100), face(200, 0, 40, prob=0.712)], "multiple_faces"),
        ("largest", 0.5, [face(0, 0, 100), face(200, 0, 40, prob=0.712)], 1),  # 16%: kept
        ("largest", 0.5, [face(-60, 300, 100)], "truncated_face"),  # cut off at the left edge
        ("largest", 0.5, [face(-10, -20, 100)], 1),  # box past the frame, features inside
        ("largest", 0.5, [face(0, 0, 30)], "too_small"),
        ("largest", 0.5, [], "no_face"),
    ],
)
def test_decide(policy: str, ratio: float, faces: list[Face], expected: str | int) -> None:
    decision = decide(faces, params(multi_face=policy, ambiguity_ratio=ratio), (1000, 1000))
    if isinstance(expected, str):
        assert decision.reason == expected and decision.detail and not decision.faces
    else:
        assert not decision.reason and len(decision.faces) == expected
        assert decision.faces[0].area == max(f.area for f in faces)


@pytest.mark.parametrize("policy", ["reject", "largest", "all"])
def test_multi_face_policies_on_the_two_face_photo(
    sample_raw: SampleRaw, tmp_path: Path, policy: str
) -> None:
    raw = copy_entries(sample_raw, sample_raw.entries(fault="two_faces"), tmp_path / "raw")
    # largest keeps a photo only when face 2 is small enough: ratio 1.0 forces that case
    ratio = 1.0 if policy == "largest" else 0.5
    detect.run(params(multi_face=policy, ambiguity_ratio=ratio), raw, tmp_path / "faces")
    kept = read_manifest(tmp_path / "faces" / "manifest.csv")
    rejects = read_manifest(tmp_path / "faces" / "rejects.csv")
    if policy == "reject":
        assert not kept and [r["reason"] for r in rejects] == ["multiple_faces"]
    elif policy == "largest":
        assert len(kept) == 1 and not rejects
    else:
        assert not rejects and [r["face_index"] for r in kept] == ["0", "1"]
        assert [Path(r["path"]).stem[-3:] for r in kept] == ["_f0", "_f1"]
        areas = [np.prod(np.diff(np.reshape(json.loads(r["box"]), (2, 2)), axis=0)) for r in kept]
        assert areas[0] >= areas[1]


def test_decide_keeps_the_other_faces_it_saw() -> None:
    faces = [face(0, 0, 100), face(200, 0, 40, prob=0.8), face(400, 0, 50, prob=0.5)]
    decision = decide(faces, params(), (1000, 1000))
    assert decision.faces == (faces[0],)
    assert decision.others == (faces[1],)  # present (>= presence_prob), not the 0.5 one


def test_presence_prob_must_not_exceed_min_prob() -> None:
    with pytest.raises(UserError, match="presence_prob"):
        load_params(overrides={"detect.presence_prob": 0.95, "detect.min_prob": 0.9})


def test_crop_square_moves_inside_the_photo_by_at_most_the_margin() -> None:
    near_edge = face(10, 200, 100)  # the 140 px square would start at x = -10
    inside = crop_matrix(near_edge, 140, 0.2, align=False, inside=(640, 480))
    left = np.linalg.solve(inside[:, :2], -inside[:, 2])  # crop (0, 0) in the photo
    assert left[0] == pytest.approx(0.0, abs=1e-6)  # moved right just enough
    box_x1 = inside @ np.array([10.0, 200.0, 1.0])
    assert box_x1[0] == pytest.approx(10.0)  # the face moved 10 px off centre, still whole
    far = face(-5, 200, 100)  # needs a 25 px move; the margin allows 20
    capped = crop_matrix(far, 140, 0.2, align=False, inside=(640, 480))
    assert (capped @ np.array([-5.0, 200.0, 1.0]))[0] == pytest.approx(0.0)  # box edge on crop edge
    small_photo = crop_matrix(face(0, 0, 100), 140, 0.2, align=False, inside=(100, 100))
    assert (small_photo @ np.array([0.0, 0.0, 1.0]))[:2] == pytest.approx([20.0, 20.0])


def test_constant_padding_is_black_and_replicate_smears() -> None:
    photo = np.full((100, 100, 3), 200, np.uint8)
    matrix = crop_matrix(face(0, 0, 100), 140, 0.2, align=False)  # 20 px outside each side
    black = crop_face(photo, matrix, 140, "constant")
    smeared = crop_face(photo, matrix, 140, "replicate")
    assert black[:15].max() == 0 and black[30:110, 30:110].min() == 200
    assert smeared[:15].min() == 200


def test_crop_matrix_levels_the_eyes_and_centres_the_box() -> None:
    tilted = face(100, 50, 120, tilt=0.5)
    assert abs(math.degrees(eye_angle(tilted))) > 20
    matrix = crop_matrix(tilted, 160, 0.2, align=True)
    (lx, ly), (rx, ry) = (matrix @ np.array([*p, 1.0]) for p in tilted.landmarks[:2])
    assert ly == pytest.approx(ry, abs=1e-9) and rx > lx
    centre = matrix @ np.array([160.0, 110.0, 1.0])
    assert centre == pytest.approx([80.0, 80.0])
    # the crop side is the box side plus the margin on both sides
    plain = crop_matrix(tilted, 160, 0.2, align=False)
    assert plain[0, 0] == pytest.approx(160 / (120 * 1.4)) and plain[0, 1] == 0


def test_aligned_crop_of_a_rotated_photo_has_level_eyes(
    sample_raw: SampleRaw, mtcnn: MtcnnDetector
) -> None:
    photo = load_rgb(sample_raw.path(sample_raw.entries(fault=None)[0]), 10**8)
    h, w = photo.shape[:2]
    turn = cv2.getRotationMatrix2D((w / 2, h / 2), 25, 1.0)
    rotated = cv2.warpAffine(photo, turn, (w, h), borderMode=cv2.BORDER_REFLECT)
    (found,) = mtcnn.detect_batch([rotated])
    assert abs(math.degrees(eye_angle(found[0]))) > 15
    crop = crop_face(rotated, crop_matrix(found[0], 160, 0.2, align=True), 160, "constant")
    (again,) = mtcnn.detect_batch([crop])
    assert abs(math.degrees(eye_angle(again[0]))) < 5


def test_downscaled_crop_is_area_filtered() -> None:
    """A 4x shrink through the prefilter matches a plain area resize (no aliasing)."""
    stripes = np.zeros((800, 800, 3), dtype=np.uint8)
    stripes[:, ::2] = 255  # 1-px stripes: pure aliasing for a bilinear 4x shrink
    whole = Face((0.0, 0.0, 800.0, 800.0), ((300.0, 300.0), (500.0, 300.0), *[(0.0, 0.0)] * 3), 1)
    crop = crop_face(stripes, crop_matrix(whole, 200, 0.0, align=False), 200, "constant")
    assert abs(crop.mean() - 127.5) < 3 and crop.std() < 10


# ---------------------------------------------------------------- hostile inputs


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height; the pixel data is one tiny chunk."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 4))
        + chunk(b"IEND", b"")
    )


def test_decompression_bomb_rejected_as_too_large_without_decoding(tmp_path: Path) -> None:
    (tmp_path / "raw" / "a").mkdir(parents=True)
    (tmp_path / "raw" / "a" / "bomb.png").write_bytes(png_claiming(100_000, 100_000))
    detect.run(params(), tmp_path / "raw", tmp_path / "faces")
    (row,) = read_manifest(tmp_path / "faces" / "rejects.csv")
    # decoding would have failed on the missing pixel data (unreadable): too_large proves it did not
    assert row["reason"] == "too_large" and "max_pixels" in row["detail"]


def test_symlink_leaving_the_raw_folder_is_rejected(sample_raw: SampleRaw, tmp_path: Path) -> None:
    outside = sample_raw.path(sample_raw.entries(fault=None)[0])
    (tmp_path / "raw" / "a").mkdir(parents=True)
    (tmp_path / "raw" / "a" / "link.jpg").symlink_to(outside)
    detect.run(params(), tmp_path / "raw", tmp_path / "faces")
    (row,) = read_manifest(tmp_path / "faces" / "rejects.csv")
    assert row["reason"] == "outside_root"
    assert not read_manifest(tmp_path / "faces" / "manifest.csv")


def test_overlapping_raw_and_output_folders_are_refused(tmp_path: Path) -> None:
    (tmp_path / "raw" / "a").mkdir(parents=True)
    with pytest.raises(UserError, match="read-only"):
        detect.run(params(), tmp_path / "raw", tmp_path / "raw" / "faces")
    assert not (tmp_path / "raw" / "faces").exists()
    with pytest.raises(UserError, match="overlap"):
        detect.run(params(), tmp_path / "raw" / "a", tmp_path / "raw")


class _FailsOnTinyImages:
    """A detector that raises on any batch holding an image under 16 px, as a model might."""

    device = "cpu"
    whole_image = False

    def detect_batch(self, images: list[np.ndarray]) -> list[list[Face]]:
        if any(min(image.shape[:2]) < 16 for image in images):
            raise RuntimeError("input too small for the network")
        return [[] for _ in images]


def test_a_detector_error_on_one_photo_rejects_that_photo_alone(tmp_path: Path) -> None:
    raw = tmp_path / "raw" / "a"
    raw.mkdir(parents=True)
    for name, side in (("big.png", 64), ("dot.png", 1), ("big2.png", 64)):
        Image.fromarray(np.full((side, side, 3), 90, np.uint8)).save(raw / name)
    finder = detect.Finder(params(), _FailsOnTinyImages())  # type: ignore[arg-type]
    rows = [ImageRow(path=str(raw / n), label="a", source="", sha256="0" * 64) for n in
            ("big.png", "dot.png", "big2.png")]  # fmt: skip
    writer = detect.CropWriter(tmp_path / "faces", "largest")
    writer.add(detect.find_faces(finder, list(enumerate(rows))))
    kept, rejects = writer.results()
    assert [(Path(r.row.path).name, r.reason) for r in rejects] == [
        ("big.png", "no_face"), ("dot.png", "processing_failed"), ("big2.png", "no_face"),
    ]  # fmt: skip
    assert rejects[1].detail == "RuntimeError: input too small for the network" and not kept


def test_an_empty_raw_folder_is_nothing_to_do(tmp_path: Path) -> None:
    """Exit 0 with "0 in, 0 kept" hid a wrong path; empty class folders count as empty."""
    (tmp_path / "raw" / "ghost").mkdir(parents=True)
    with pytest.raises(UserError, match="detect: nothing to do"):
        detect.run(params(), tmp_path / "raw", tmp_path / "faces")
    assert not (tmp_path / "faces").exists()


def test_every_kind_of_bad_file_is_a_reject_and_an_empty_class_is_reported(
    tmp_path: Path,
) -> None:
    raw = tmp_path / "raw"
    (raw / "a").mkdir(parents=True)
    (raw / "ghost").mkdir()
    for name, (w, h) in {"dot.png": (1, 1), "line.png": (1, 8), "speck.png": (2, 2)}.items():
        Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(raw / "a" / name)
    (raw / "a" / "zero.jpg").write_bytes(b"")
    (raw / "a" / "bomb.png").write_bytes(png_claiming(100_000, 100_000))
    report = detect.run(params(), raw, tmp_path / "faces")
    reasons = {
        Path(r["path"]).name: r["reason"] for r in read_manifest(tmp_path / "faces" / "rejects.csv")
    }
    assert reasons == {
        "dot.png": "no_face", "line.png": "no_face", "speck.png": "no_face",
        "zero.jpg": "unreadable", "bomb.png": "too_large",
    }  # fmt: skip
    assert report.extra["empty_classes"] == ["ghost"] and "ghost" in report.summary()


# ---------------------------------------------------------------- the detector itself


def test_astronaut_has_one_face_where_it_should_be(mtcnn: MtcnnDetector) -> None:
    skimage_data = pytest.importorskip("skimage.data")
    (faces,) = mtcnn.detect_batch([skimage_data.astronaut()])
    assert len(faces) == 1 and faces[0].prob > 0.99
    # measured: (181.1, 62.2, 267.7, 172.1) in the 512x512 photo
    assert faces[0].box == pytest.approx((181, 62, 268, 172), abs=6)
    (lx, ly), (rx, ry) = faces[0].landmarks[:2]
    assert 190 < lx < rx < 260 and 90 < ly < 115 and 90 < ry < 115


def test_downscaled_detection_maps_back_to_source_pixels(mtcnn: MtcnnDetector) -> None:
    skimage_data = pytest.importorskip("skimage.data")
    big = cv2.resize(skimage_data.astronaut(), (1024, 1024), interpolation=cv2.INTER_CUBIC)
    small = MtcnnDetector("cpu", max_side=512)
    (faces,) = small.detect_batch([big])
    assert faces[0].box == pytest.approx((362, 124, 536, 344), abs=12)


def test_batched_equals_one_at_a_time_on_mixed_sizes(
    sample_raw: SampleRaw, mtcnn: MtcnnDetector
) -> None:
    photos = [
        load_rgb(sample_raw.path(e), 10**8)
        for e in sample_raw.truth["files"]
        if e["expect_stage"] != "detect"
    ][:10]
    photos.append(np.zeros((300, 400, 3), dtype=np.uint8))  # no face in a batch must not crash
    photos.append(np.zeros((12, 900, 3), dtype=np.uint8))  # smaller than any face: no pyramid
    assert len({p.shape for p in photos}) >= 4
    batched = mtcnn.detect_batch(photos)
    assert batched[-1] == [] and batched[-2] == []
    for photo, faces in zip(photos, batched, strict=True):
        alone = mtcnn.detect_one(photo)
        assert len(alone) == len(faces)
        for a, b in zip(alone, faces, strict=True):
            assert np.abs(np.subtract(a.box, b.box)).max() <= 1.0  # measured: ~1e-4 px
            assert abs(a.prob - b.prob) < 1e-3


def test_faces_come_largest_first(sample_raw: SampleRaw, mtcnn: MtcnnDetector) -> None:
    (entry,) = sample_raw.entries(fault="two_faces")
    (faces,) = mtcnn.detect_batch([load_rgb(sample_raw.path(entry), 10**8)])
    assert len(faces) == 2 and faces[0].area >= faces[1].area


def test_plan_buckets_groups_equal_sizes_and_pads_only_when_allowed() -> None:
    shapes = [(480, 640), (640, 480), (480, 640), (600, 800), (640, 480)]
    exact = plan_buckets(shapes)
    assert sorted(sorted(members) for _, members in exact) == [[0, 2], [1, 4], [3]]
    assert all(canvas == shapes[members[0]] for canvas, members in exact)
    padded = plan_buckets(shapes, max_waste=0.5)
    assert sum(len(m) for _, m in padded) == len(shapes) and len(padded) < len(exact)
    for canvas, members in padded:
        assert all(shapes[i][0] <= canvas[0] and shapes[i][1] <= canvas[1] for i in members)


def test_size_order_groups_by_header_size_in_scan_order(tmp_path: Path) -> None:
    sizes = [(64, 48), (48, 64), (64, 48), None, (48, 64)]
    rows = []
    for k, size in enumerate(sizes):
        path = tmp_path / f"{k}.png"
        if size is None:
            path.write_bytes(b"not an image")
        else:
            Image.new("RGB", size).save(path)
        rows.append(ImageRow(path=str(path)))
    assert detect.size_order(rows) == [3, 1, 4, 0, 2]  # unreadable first, then by (w, h)


def test_detectors_are_listed() -> None:
    assert "mtcnn" in DETECTORS.names()
