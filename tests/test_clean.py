from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.components.embedders import Embeddings, save_embeddings
from pipeline.components.keypoints import KeypointMatch
from pipeline.components.likeness import (
    Registered,
    Resemblance,
    SamePhotoRule,
    _tone_fit,
    at_common_resolution,
    hamming,
    phash,
    region_difference,
)
from pipeline.core.errors import StageError
from pipeline.core.files import sha256_bytes
from pipeline.core.images import decode_rgb, encode_jpeg
from pipeline.core.manifest import Row, read_manifest, write_manifest
from pipeline.core.params import load_params
from pipeline.core.rows import CleanRow
from stages import clean


def _picture(seed: int) -> np.ndarray:
    """A distinct 160x160 picture: smooth random layout plus fine texture."""
    rng = np.random.default_rng(seed)
    layout = cv2.resize(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8), (160, 160))
    texture = cv2.resize(rng.integers(-40, 41, (64, 64, 3)).astype(np.float32), (160, 160))
    return np.clip(layout.astype(int) + texture, 0, 255).astype(np.uint8)


def _write(root: Path, label: str, name: str, rgb: np.ndarray, face_px: int = 120) -> Row:
    path = root / label / name
    path.parent.mkdir(parents=True, exist_ok=True)
    data = encode_jpeg(rgb, 92)
    path.write_bytes(data)
    sha = sha256_bytes(data)
    return {"path": str(path), "label": label, "sha256": sha, "face_px": str(face_px)}


@pytest.fixture
def faces(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """Two classes of 6 distinct crops plus one planted fault of each kind in class a."""
    rows = [_write(tmp_path, label, f"{i}.jpg", _picture(100 * c + i))
            for c, label in enumerate("ab") for i in range(6)]  # fmt: skip
    source = _picture(0)
    shrunk = cv2.resize(cv2.resize(source, (136, 136)), (160, 160))
    planted = {
        "exact_duplicate": _write(tmp_path, "a", "copy.jpg", source),
        "near_duplicate": _write(tmp_path, "a", "near.jpg", shrunk, face_px=90),
        "blurry": _write(tmp_path, "a", "blur.jpg", cv2.GaussianBlur(_picture(50), (0, 0), 4)),
        "too_small": _write(tmp_path, "a", "tiny.jpg", _picture(51), face_px=20),
    }
    rows += planted.values()
    # a class of two images is too small to keep
    rows += [_write(tmp_path, "c", f"{i}.jpg", _picture(300 + i)) for i in range(2)]
    manifest = tmp_path / "faces.csv"
    write_manifest(manifest, rows)
    return manifest, {reason: row["path"] for reason, row in planted.items()}


def test_each_planted_fault_gets_its_reason(tmp_path: Path, faces) -> None:
    manifest, planted = faces
    report = clean.run(load_params().clean, manifest, tmp_path / "clean")
    rejects = read_manifest(tmp_path / "clean" / "rejects.csv")
    reason_of = {r["path"]: r["reason"] for r in rejects}
    for reason, path in planted.items():
        assert reason_of.get(path) == reason, (path, reason_of.get(path))
    assert sorted(r["reason"] for r in rejects if r["label"] == "c") == ["class_too_small"] * 2
    kept = read_manifest(tmp_path / "clean" / "manifest.csv")
    assert len(kept) == 12  # every distinct clean image survives
    assert report.n_in == len(kept) + len(rejects)  # nothing lost
    assert all(r["detail"] for r in rejects)


def test_the_best_copy_of_a_duplicate_survives(tmp_path: Path, faces) -> None:
    manifest, planted = faces
    clean.run(load_params().clean, manifest, tmp_path / "clean")
    rejects = {r["path"]: r for r in read_manifest(tmp_path / "clean" / "rejects.csv")}
    assert rejects[planted["near_duplicate"]]["detail"].startswith("near duplicate of ")
    assert rejects[planted["near_duplicate"]]["detail"].split()[3].endswith("a/0.jpg")


def test_max_per_class_keeps_the_sharpest(tmp_path: Path, faces) -> None:
    manifest, _ = faces
    params = load_params(overrides={"clean.max_per_class": 4}).clean
    clean.run(params, manifest, tmp_path / "clean")
    kept = read_manifest(tmp_path / "clean" / "manifest.csv")
    assert {label: sum(r["label"] == label for r in kept) for label in "ab"} == {"a": 4, "b": 4}


def test_unreadable_crop_is_rejected_not_fatal(tmp_path: Path, faces) -> None:
    manifest, _ = faces
    rows = read_manifest(manifest)
    broken = tmp_path / "a" / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    rows.append({"path": str(broken), "label": "a", "sha256": "0" * 64, "face_px": "100"})
    write_manifest(manifest, rows)
    clean.run(load_params().clean, manifest, tmp_path / "clean")
    rejects = read_manifest(tmp_path / "clean" / "rejects.csv")
    assert [r["reason"] for r in rejects if r["path"] == str(broken)] == ["unreadable"]


def test_phash_tolerates_reencoding_but_separates_pictures() -> None:
    gray = cv2.cvtColor(_picture(7), cv2.COLOR_RGB2GRAY)
    reencoded = cv2.imdecode(cv2.imencode(".jpg", gray, [cv2.IMWRITE_JPEG_QUALITY, 60])[1], 0)
    other = cv2.cvtColor(_picture(8), cv2.COLOR_RGB2GRAY)
    assert hamming(phash(gray), phash(reencoded)) <= 4
    assert hamming(phash(gray), phash(other)) > 16


def test_a_shrunk_copy_is_judged_at_its_resolution_and_a_real_change_still_shows() -> None:
    """A photo shrunk to 40 % and enlarged back by the crop lacks the original's fine
    detail: as it is, its face regions differ beyond clean's threshold; blurred to the
    coarser photo's detail they do not. A region that really changed (a patch turned over,
    as an eye closing or a mouth opening changes it) still stands out."""
    rng = np.random.default_rng(3)
    layout = cv2.resize(rng.uniform(90, 160, (6, 6)).astype(np.float32), (160, 160))
    detail = cv2.GaussianBlur(rng.uniform(-60, 60, (160, 160)).astype(np.float32), (0, 0), 1.0)
    photo = np.clip(layout + detail, 0, 255).astype(np.float32)
    small = cv2.resize(photo, (64, 64), interpolation=cv2.INTER_AREA)
    copy = cv2.resize(small, (160, 160), interpolation=cv2.INTER_CUBIC)
    changed = copy.copy()
    changed[50:80, 40:70] = np.flipud(changed[50:80, 40:70])
    face, shared = (20.0, 20.0, 140.0, 140.0), np.ones(photo.shape, bool)
    threshold = load_params().clean.same_photo_region

    as_is = Registered(1.0, photo, copy, shared)
    assert region_difference(as_is, face).worst > threshold
    assert region_difference(at_common_resolution(as_is, 1.0, 2.5), face).worst < threshold
    other_photo = at_common_resolution(Registered(1.0, photo, changed, shared), 1.0, 2.5)
    assert region_difference(other_photo, face).worst > 3 * threshold
    # two photos at one resolution are compared as they are
    assert at_common_resolution(as_is, 1.5, 1.5) is as_is


def _marked(photo: np.ndarray, rows: slice) -> np.ndarray:
    """``photo`` with white text at 40 % opacity over ``rows``, re-saved as JPEG 70."""
    mask = np.zeros(photo.shape, np.uint8)
    for y in range(rows.start + 10, rows.stop, 12):
        cv2.putText(mask, "(c) PHOTO AGENCY", (2, y), cv2.FONT_HERSHEY_PLAIN, 0.8, 255, 1)
    alpha = 0.4 * mask.astype(np.float32) / 255
    marked = np.clip(photo + alpha * (255 - photo), 0, 255).astype(np.uint8)
    jpeg = cv2.imencode(".jpg", marked, [cv2.IMWRITE_JPEG_QUALITY, 70])[1]
    return cv2.imdecode(jpeg, cv2.IMREAD_GRAYSCALE).astype(np.float32)


def test_a_watermark_is_forgiven_where_a_changed_region_is_not() -> None:
    """White text over the lower face brightens every pixel it covers: those cells have no
    say, and the text does not tilt the tone fit for the rest of the face. The same cells
    changed both ways (a patch turned over: an eye closing, a mouth opening) still count,
    and a mark over the whole face leaves nothing to judge."""
    rng = np.random.default_rng(5)
    layout = cv2.resize(rng.uniform(90, 160, (6, 6)).astype(np.float32), (160, 160))
    detail = cv2.GaussianBlur(rng.uniform(-40, 40, (160, 160)).astype(np.float32), (0, 0), 1.5)
    photo = np.clip(layout + detail, 0, 255).astype(np.float32)
    face, shared = (20.0, 20.0, 140.0, 140.0), np.ones(photo.shape, bool)
    threshold = load_params().clean.same_photo_region

    copy = _marked(photo, slice(100, 140))
    gain, offset = _tone_fit(copy[shared], photo[shared])
    assert abs(gain - 1) < 0.02 and abs(offset) < 3  # least squares: 0.74 and 31, tilted
    assert region_difference(Registered(1.0, photo, copy, shared), face).worst <= threshold
    changed = photo.copy()
    changed[100:140, 20:140] = np.flipud(changed[100:140, 20:140])
    assert region_difference(Registered(1.0, photo, changed, shared), face).worst > 3 * threshold
    everywhere = _marked(photo, slice(0, 160))
    assert region_difference(Registered(1.0, photo, everywhere, shared), face).worst > threshold
    marked = region_difference(Registered(1.0, photo, copy, shared), face).marked
    assert marked and all(box[1] >= 80 for box in marked)  # the cells of the text's rows


def test_keypoints_under_a_mark_are_counted_apart_only_where_the_pixels_agree() -> None:
    """A watermark's letters are keypoints of their own that match nothing: counted
    outside the cells the mark covers, a copy's matches are exact again. That count decides
    only where the pixels agree outside the mark (no region past ``marked_region``): a
    distinct photo of the sitting with one cell leaning one way differs far more."""
    face = (0.0, 0.0, 90.0, 90.0)
    grid = np.float32([(x, y) for y in range(5, 90, 10) for x in range(5, 90, 10)])
    misses = np.where(grid[:, 1] > 60, 3.0, 0.1).astype(np.float32)  # the text's rows
    match = KeypointMatch.counted(np.eye(2, 3, dtype=np.float32), False, grid, misses, face)
    assert (match.exact, round(match.share, 2), match.cells) == (54, 0.67, 6)
    outside = match.outside([(0.0, 60.0, 45.0, 90.0), (45.0, 60.0, 90.0, 90.0)])
    assert (outside.exact, outside.share, outside.cells) == (54, 1.0, 6)
    assert match.outside([]).share == match.share

    rule = SamePhotoRule.of(load_params().clean)
    weak = replace(match, share=rule.keypoint_share - 0.05)  # the letters dilute the share
    copy = Resemblance(0.99, rule.region * 2, weak, outside)
    assert rule.verified(copy)
    assert not rule.verified(replace(copy, unmarked=None))  # no mark found: no recount
    another_photo = replace(copy, region=rule.marked_region * 2)
    assert not rule.verified(another_photo)


# ---------------------------------------------------------------- identity (embeddings)

DIM = 128


def _vec(rng: np.random.Generator, centre: np.ndarray, spread: float) -> np.ndarray:
    return (centre + spread * rng.standard_normal(DIM) / np.sqrt(DIM)).astype(np.float32)


def _identity_set(
    tmp_path: Path, classes: str = "abc", per_class: int = 6
) -> tuple[list[Row], dict[str, np.ndarray], dict[str, np.ndarray], np.random.Generator]:
    """Distinct crops per class; embeddings ~0.3 from a class centre, centres ~1.0 apart."""
    rng = np.random.default_rng(7)
    centres = {c: rng.standard_normal(DIM) * 0.71 / np.sqrt(DIM) for c in classes}
    rows, vectors = [], {}
    for k, label in enumerate(classes):
        for i in range(per_class):
            row = _write(tmp_path, label, f"{i}.jpg", _picture(1000 * (k + 1) + i))
            rows.append(row)
            vectors[row["sha256"]] = _vec(rng, centres[label], 0.3)
    return rows, vectors, centres, rng


def _save(tmp_path: Path, rows: list[Row], vectors: dict[str, np.ndarray]) -> tuple[Path, Path]:
    manifest, emb = tmp_path / "faces.csv", tmp_path / "emb.npz"
    write_manifest(manifest, rows)
    save_embeddings(emb, Embeddings("test", vectors))
    return manifest, emb


def test_identity_faults_get_their_reason_and_name_the_other_image(tmp_path: Path) -> None:
    rows, vectors, centres, rng = _identity_set(tmp_path)
    intruder = _write(tmp_path, "a", "intruder.jpg", _picture(50))  # a face of class b
    vectors[intruder["sha256"]] = _vec(rng, centres["b"], 0.3)
    twin_a = _write(tmp_path, "a", "twin.jpg", _picture(60))  # one photo under two names
    twin_c = _write(tmp_path, "c", "twin.jpg", _picture(60))
    vectors[twin_a["sha256"]] = _vec(rng, centres["a"], 0.3)
    source = _picture(70)
    near = _write(tmp_path, "b", "near.jpg", cv2.resize(cv2.resize(source, (136, 136)), (160, 160)))
    original = _write(tmp_path, "b", "orig.jpg", source, face_px=130)
    vectors[original["sha256"]] = _vec(rng, centres["b"], 0.3)
    vectors[near["sha256"]] = vectors[original["sha256"]] + 0.005
    rows += [intruder, twin_a, twin_c, near, original]
    manifest, emb = _save(tmp_path, rows, vectors)

    report = clean.run(load_params().clean, manifest, tmp_path / "out", emb).to_dict()
    rejects = read_manifest(tmp_path / "out" / "rejects.csv")
    got = {r["path"]: (r["reason"], r["conflict_with"]) for r in rejects}
    nearest_b = got[intruder["path"]][1]
    assert got[intruder["path"]][0] == "wrong_identity" and "/b/" in nearest_b
    assert got[twin_a["path"]] == ("label_conflict", twin_c["path"])
    assert got[twin_c["path"]] == ("label_conflict", twin_a["path"])
    assert got[near["path"]] == ("near_duplicate", original["path"])
    assert len(rejects) == 4  # no genuine image is lost
    assert report["in"] == report["kept"] + report["rejected"]
    assert all(r["reason"] and r["detail"] and r["stage"] == "clean" for r in rejects)
    assert report["identity_checked"] is True


def test_keep_majority_keeps_the_copy_where_the_face_belongs(tmp_path: Path) -> None:
    rows, vectors, centres, rng = _identity_set(tmp_path)
    twin_a = _write(tmp_path, "a", "twin.jpg", _picture(60))
    twin_c = _write(tmp_path, "c", "twin.jpg", _picture(60))
    vectors[twin_a["sha256"]] = _vec(rng, centres["a"], 0.2)
    manifest, emb = _save(tmp_path, [*rows, twin_a, twin_c], vectors)
    params = load_params(overrides={"clean.label_conflict_policy": "keep_majority"}).clean
    clean.run(params, manifest, tmp_path / "out", emb)
    rejects = read_manifest(tmp_path / "out" / "rejects.csv")
    assert [(r["path"], r["reason"]) for r in rejects] == [(twin_c["path"], "label_conflict")]
    assert "kept the copy in class 'a'" in rejects[0]["detail"]


def test_a_hash_match_needs_the_pixels_and_a_verified_copy_needs_nothing_else(
    tmp_path: Path,
) -> None:
    """Hashes and embeddings only propose pairs. Two pictures with one layout (close
    hashes) but other detail are kept; a resampled copy is a near duplicate even where the
    embedder puts the two faces apart (a watermark over a face moves dlib's embedding of a
    copy past duplicate_distance)."""
    rows, vectors, centres, rng = _identity_set(tmp_path)
    source = _picture(80)
    texture = cv2.resize(rng.integers(-40, 41, (64, 64, 3)).astype(np.float32), (160, 160))
    layout = cv2.GaussianBlur(source.astype(np.float32), (0, 0), 6)
    lookalike = np.clip(layout + texture, 0, 255).astype(np.uint8)
    copy = cv2.resize(cv2.resize(source, (140, 140)), (160, 160))
    written = [_write(tmp_path, "a", f"{name}.jpg", rgb) for name, rgb in
               (("source", source), ("lookalike", lookalike), ("copy", copy))]  # fmt: skip
    gray = [cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) for rgb in (source, lookalike, copy)]
    assert all(hamming(phash(gray[0]), phash(other)) <= 8 for other in gray[1:])  # candidates
    for row in written:
        vectors[row["sha256"]] = _vec(rng, centres["a"], 0.3)
    manifest, emb = _save(tmp_path, [*rows, *written], vectors)
    clean.run(load_params().clean, manifest, tmp_path / "out", emb)
    rejects = read_manifest(tmp_path / "out" / "rejects.csv")
    gone = sorted((Path(r["path"]).stem, r["reason"]) for r in rejects)
    assert gone == [("copy", "near_duplicate")] or gone == [("source", "near_duplicate")]
    assert {Path(r["conflict_with"]).stem for r in rejects} <= {"source", "copy"}


def test_stale_embeddings_are_an_error(tmp_path: Path) -> None:
    rows, vectors, _, _ = _identity_set(tmp_path)
    del vectors[rows[0]["sha256"]]
    manifest, emb = _save(tmp_path, rows, vectors)
    with pytest.raises(StageError, match="no embedding"):
        clean.run(load_params().clean, manifest, tmp_path / "out", emb)


def _planted_pairs(tmp_path: Path) -> tuple[Path, Path, list[tuple[str, str]]]:
    """Per class: 4 singles, 3 copies of one photo whose hashes differ (mirrored, cropped,
    mirrored and retoned) with close embeddings, 2 other photos of one sitting (close hashes:
    the subject moved by half a pixel, unevenly, and an eye-sized patch changed, so the crops
    correlate as one photo's do but are no copy), and 2 pairs of *different* photos with
    close embeddings (0.19-0.25 apart, as distinct real photos of one person can be), which
    must not be grouped. Returns (manifest, embeddings, the planted look-alike pairs)."""
    rows, vectors, centres, rng = _identity_set(tmp_path, "ab", per_class=4)
    same: list[tuple[str, str]] = []

    def plant(
        label: str, name: str, first_rgb, second_rgb, spread: float, **geometry: str
    ) -> tuple[Row, Row]:
        first = _write(tmp_path, label, f"{name}.jpg", first_rgb)
        second = {**_write(tmp_path, label, f"{name}b.jpg", second_rgb), **geometry}
        vectors[first["sha256"]] = _vec(rng, centres[label], 0.3)
        vectors[second["sha256"]] = _vec(rng, vectors[first["sha256"]], spread)
        rows.extend((first, second))
        return first, second

    for k, label in enumerate("ab"):
        for i, edit in enumerate(("mirrored", "cropped", "mirrored and retoned")):
            source = _picture(5000 + 10 * k + i)
            edited, geometry = source[:, ::-1], {}
            if edit == "cropped":  # the same photo cut 50 px further right: detect pads that
                edited = source.copy()
                edited[:, :50] = 0
                geometry = {"crop_matrix": "[[1,0,50],[0,1,0]]", "source_size": "[110,160]"}
            elif edit == "mirrored and retoned":
                edited = 255 * (source[:, ::-1] / 255) ** 0.6
            pair = plant(label, f"e{i}", source, edited.astype(np.uint8), 0.1, **geometry)
            same.append((pair[0]["path"], pair[1]["path"]))
        for i in range(2):
            source = _picture(7000 + 10 * k + i)
            pair = plant(label, f"p{i}", source, _same_sitting(source), 0.15)
            same.append((pair[0]["path"], pair[1]["path"]))
        for i in range(2):
            plant(label, f"d{i}", _picture(8000 + 10 * k + i), _picture(9000 + 10 * k + i), 0.22)
    return (*_save(tmp_path, rows, vectors), same)


def _same_sitting(photo: np.ndarray) -> np.ndarray:
    """Another photo of the sitting: an eye-sized patch changed and the whole moved by up
    to half a pixel, unevenly (measured: correlation 0.979-0.988, worst region 0.5-0.8, too
    few keypoints exact under one similarity)."""
    other = photo.copy()
    other[60:90, 50:80] = other[60:90, 50:80][::-1]
    rows, cols = np.mgrid[0 : photo.shape[0], 0 : photo.shape[1]].astype(np.float32)
    x, y = cols + 0.5 * np.sin(rows / 9), rows + 0.5 * np.cos(cols / 11)
    return cv2.remap(other, x, y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def _straddling(rows: list[Row], pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Planted same-photo pairs that sit in different splits."""
    split_of = {row["path"]: row["split"] for row in rows}
    return [(a, b) for a, b in pairs if split_of[a] != split_of[b]]


def test_planted_near_duplicates_never_straddle_the_split(tmp_path: Path) -> None:
    from stages import split

    manifest, emb, pairs = _planted_pairs(tmp_path)
    params = load_params()
    report = clean.run(params.clean, manifest, tmp_path / "clean", emb).to_dict()
    rejects = read_manifest(tmp_path / "clean" / "rejects.csv")
    # of the 6 edited copies (mirrored, cropped; embeddings agree) and their originals,
    # one of each pair goes as a near duplicate of the other ...
    edits = [(a, b) for a, b in pairs if Path(a).stem.startswith("e")]
    gone = {r["path"]: r["conflict_with"] for r in rejects if r["reason"] == "near_duplicate"}
    assert len(rejects) == len(gone) == len(edits)
    assert all(gone.get(a) == b or gone.get(b) == a for a, b in edits)
    # ... the 4 other photos of a sitting are grouped with their look-alike, and the 4 pairs
    # of different photos are not chained
    assert report["groups_of_lookalikes"] == 4 and report["images_in_groups"] == 8
    pairs = [(a, b) for a, b in pairs if (a, b) not in edits]
    for seed in range(8):
        split.run(params.split, seed, tmp_path / "clean" / "manifest.csv", tmp_path / "split")
        rows = read_manifest(tmp_path / "split" / "manifest.csv")
        assert _straddling(rows, pairs) == [], seed
        assert {r["split"] for r in rows} == {"train", "val", "test"}


def test_without_groups_the_same_data_would_straddle(tmp_path: Path) -> None:
    """The check above has teeth: one row per group lets some pair cross the split."""
    from stages import split

    manifest, emb, pairs = _planted_pairs(tmp_path)
    params = load_params()
    clean.run(params.clean, manifest, tmp_path / "clean", emb)
    rows = read_manifest(tmp_path / "clean" / "manifest.csv")
    pairs = [(a, b) for a, b in pairs if Path(a).stem.startswith("p")]  # the grouped ones
    ungrouped = [{**row, "group": row["sha256"][:12]} for row in rows]
    write_manifest(tmp_path / "ungrouped.csv", ungrouped)
    crossed = 0
    for seed in range(8):
        split.run(params.split, seed, tmp_path / "ungrouped.csv", tmp_path / "split")
        crossed += len(_straddling(read_manifest(tmp_path / "split" / "manifest.csv"), pairs))
    assert crossed > 0


# ---------------------------------------------------------------- the sample's ground truth

MAX_CLEAN_LOST_TO_IDENTITY = 0.10  # README: at most this share of clean images
IDENTITY_REASONS = ("wrong_identity", "label_conflict")


@pytest.mark.slow
def test_sample_faults_caught_and_few_clean_images_lost(sample_faces, tmp_path: Path) -> None:
    """embed + clean on the generated sample (real detect output, dlib embeddings)."""
    from stages import embed

    params = load_params()
    emb = tmp_path / "emb.npz"
    embed.run(params.embed.model_copy(update={"workers": 1}), sample_faces.manifest, emb)
    clean.run(params.clean, sample_faces.manifest, tmp_path / "clean", emb)
    root = sample_faces.raw.root
    reason = {
        Path(r["source"]).relative_to(root).as_posix(): r["reason"]
        for r in read_manifest(tmp_path / "clean" / "rejects.csv")
    }
    for entry in sample_faces.raw.entries(expect_stage="clean"):
        if entry["fault"] == "exact_duplicate":  # identical bytes: either copy may go
            pair = [reason.get(entry["file"]), reason.get(entry["of"])]
            assert pair.count("exact_duplicate") == 1 and pair.count(None) == 1, entry
        else:
            assert reason.get(entry["file"]) == entry["expect_reason"], entry
    intruder = sample_faces.raw.entries(fault="other_class_face")[0]
    assert reason[intruder["file"]] in ("wrong_identity", "label_conflict")
    clean_files = [e["file"] for e in sample_faces.raw.entries(expect_stage=None)]
    lost_to_identity = [f for f in clean_files if reason.get(f) in IDENTITY_REASONS]
    assert len(lost_to_identity) <= MAX_CLEAN_LOST_TO_IDENTITY * len(clean_files)
    # ...and no clean photo is lost to the pixel checks at all; the original of an exact
    # duplicate may go instead of its byte-identical copy (asserted above).
    originals = {e["of"] for e in sample_faces.raw.entries(fault="exact_duplicate")}
    lost_to_pixels = [
        f for f in clean_files
        if reason.get(f) and reason[f] not in IDENTITY_REASONS
        and not (f in originals and reason[f] == "exact_duplicate")
    ]  # fmt: skip
    assert lost_to_pixels == []


def test_show_rejects_draws_every_reason(tmp_path: Path) -> None:
    """`prep show --rejects`: one band per reason, each reject beside its conflicting image."""
    from typer.testing import CliRunner

    from pipeline.cli import app
    from pipeline.cli.contact_sheet import rejects_sheet

    rows, vectors, centres, rng = _identity_set(tmp_path)
    intruder = _write(tmp_path, "a", "intruder.jpg", _picture(50))
    vectors[intruder["sha256"]] = _vec(rng, centres["b"], 0.3)
    copy = _write(tmp_path, "b", "copy.jpg", _picture(2000))  # exact copy of b/0.jpg
    blurry = _write(tmp_path, "c", "blur.jpg", cv2.GaussianBlur(_picture(3003), (0, 0), 4))
    for row in (copy, blurry):
        vectors[row["sha256"]] = _vec(rng, centres[row["label"]], 0.3)
    manifest, emb = _save(tmp_path, [*rows, intruder, copy, blurry], vectors)
    clean.run(load_params().clean, manifest, tmp_path / "out", emb)
    rejects = tmp_path / "out" / "rejects.csv"
    counts = rejects_sheet(rejects, tmp_path / "direct.png", thumb=64)
    assert counts == {"blurry": 1, "exact_duplicate": 1, "wrong_identity": 1}
    out = tmp_path / "sheet.png"
    result = CliRunner().invoke(app, ["show", "--rejects", str(rejects), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "wrong_identity 1" in result.output
    sheet = cv2.imread(str(out))
    assert sheet is not None and sheet.shape[0] > 3 * 96  # three bands of thumbnails


def test_of_copies_of_one_photo_the_best_source_survives_and_detail_says_why(
    tmp_path: Path,
) -> None:
    """#16: a quality-60 re-encode whose face box came out 90 px against its quality-92
    original's 87 px must not displace the original (boxes jitter by a few pixels)."""
    source = _picture(0)
    rows = [_write(tmp_path, "a", f"{i}.jpg", _picture(i)) for i in range(1, 6)]
    for name, quality, face_px in (("original.jpg", 92, 87), ("copy_q60.jpg", 60, 90)):
        crop = decode_rgb(encode_jpeg(source, quality), 10**6)
        row = _write(tmp_path, "a", name, crop, face_px=face_px)
        photo = tmp_path / "raw" / name
        photo.parent.mkdir(exist_ok=True)
        photo.write_bytes(encode_jpeg(source, quality))
        rows.append({**row, "source": str(photo)})
    manifest = tmp_path / "faces.csv"
    write_manifest(manifest, rows)
    clean.run(load_params().clean, manifest, tmp_path / "clean")
    (rejected,) = read_manifest(tmp_path / "clean" / "rejects.csv")
    assert rejected["path"].endswith("copy_q60.jpg") and rejected["reason"] == "near_duplicate"
    assert rejected["conflict_with"].endswith("original.jpg")
    assert "JPEG quality 92 against 60" in rejected["detail"]


def test_look_alike_groups_never_chain() -> None:
    """A like B and B like C, but A is not C: complete linkage keeps C out of A's group, so
    a series of similar photos cannot become one group that split cannot place."""
    rows = [CleanRow(path=p, label="a", sha256=p * 12) for p in "abcd"]
    like = {frozenset("ab"), frozenset("bc"), frozenset("cd")}
    grouped = clean.assign_groups(rows, lambda x, y: frozenset((x.path, y.path)) in like)
    groups = [r.group for r in grouped]
    assert groups[0] == groups[1] and groups[2] == groups[3] and groups[1] != groups[2]
