"""The augment stage: counts, originals, determinism, rejects, selection, atomicity."""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.components.recipes import Classic8
from pipeline.core.config import AugmentParams
from pipeline.core.crops import face_box_in_crop
from pipeline.core.errors import UserError
from pipeline.core.files import sha256_bytes
from pipeline.core.images import decode, decode_rgb, encode_jpeg
from pipeline.core.manifest import Row, read_manifest, read_rows, write_manifest
from pipeline.core.rows import AugmentedRow
from stages import augment

MakeFolder = Callable[..., Path]


def params(**changes: object) -> AugmentParams:
    base = {
        "domain": "faces",
        "factor": 4,
        "recipe": "classic8",
        "keep_original": True,
        "workers": 1,
        "jpeg_quality": 95,
        "include_generated": True,
        "min_side": 8,
    }
    return AugmentParams(**(base | changes))


def by_parent(rows: list[Row]) -> dict[str, list[Row]]:
    groups: dict[str, list[Row]] = {}
    for row in rows:
        groups.setdefault(row["parent"], []).append(row)
    return groups


def relative_files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*.jpg"))}


def test_factor_outputs_per_source_with_original(in_tmp: Path, make_image_folder: MakeFolder):
    raw = make_image_folder(classes=2, per_class=3)
    report = augment.run(params(factor=4, recipe="medium"), 0, raw, in_tmp / "out")
    rows = read_manifest(in_tmp / "out" / "manifest.csv")
    groups = by_parent(rows)
    assert len(groups) == 6 and len(rows) == 24
    assert list(groups) == sorted(groups)  # input order, whatever order the work ran in
    for parent, group in groups.items():
        assert [r["variant"] for r in group] == ["0", "1", "2", "3"]
        assert [r["kind"] for r in group] == ["original"] + ["augmented"] * 3
        original = Path(parent).read_bytes()
        assert Path(group[0]["path"]).read_bytes() == original  # copied, not re-encoded
        assert group[0]["sha256"] == sha256_bytes(original)
        assert {r["split"] for r in group} == {"train"} and group[0]["source"] == parent
        assert Path(group[1]["path"]).parent.name == group[1]["label"]
    for row in rows:
        assert sha256_bytes(Path(row["path"]).read_bytes()) == row["sha256"]
    assert (report.n_in, report.n_kept, report.n_rejected) == (6, 6, 0)
    assert report.extra["outputs"] == 24


def test_without_original_every_output_is_augmented(in_tmp: Path, make_image_folder: MakeFolder):
    """keep_original=false still gives `factor` outputs per source, none of them the source;
    classic8, whose variant 0 is the identity, then uses variants from 1..7 (spread out:
    flip, threshold, blur alone for factor 3)."""
    raw = make_image_folder(classes=1, per_class=2)
    for recipe, expected in (("light", ["0", "1", "2"]), ("classic8", ["1", "2", "4"])):
        out = in_tmp / recipe
        augment.run(params(factor=3, recipe=recipe, keep_original=False), 0, raw, out)
        for parent, group in by_parent(read_manifest(out / "manifest.csv")).items():
            assert [r["variant"] for r in group] == expected
            assert {r["kind"] for r in group} == {"augmented"}
            assert sha256_bytes(Path(parent).read_bytes()) not in {r["sha256"] for r in group}
    with pytest.raises(UserError, match="at most 8"):
        augment.run(params(factor=8, keep_original=False), 0, raw, in_tmp / "x", dry_run=True)


def test_same_bytes_for_any_worker_count(in_tmp: Path, make_image_folder: MakeFolder):
    raw = make_image_folder(classes=2, per_class=4)
    augment.run(params(factor=3, recipe="medium", workers=1), 7, raw, in_tmp / "w1")
    augment.run(params(factor=3, recipe="medium", workers=2), 7, raw, in_tmp / "w2")
    one = read_manifest(in_tmp / "w1" / "manifest.csv")
    two = read_manifest(in_tmp / "w2" / "manifest.csv")
    assert [r["sha256"] for r in one] == [r["sha256"] for r in two]
    assert [r["params"] for r in one] == [r["params"] for r in two]
    assert relative_files(in_tmp / "w1") == relative_files(in_tmp / "w2")


def test_seed_decides_the_bytes(in_tmp: Path, make_image_folder: MakeFolder):
    raw = make_image_folder(classes=1, per_class=3)
    hashes = {}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        augment.run(params(factor=3, recipe="light"), seed, raw, in_tmp / name)
        rows = read_manifest(in_tmp / name / "manifest.csv")
        hashes[name] = [r["sha256"] for r in rows if r["kind"] == "augmented"]
    assert hashes["a"] == hashes["b"]
    assert not set(hashes["a"]) & set(hashes["c"])


def test_params_replay_classic8(in_tmp: Path, make_image_folder: MakeFolder):
    raw = make_image_folder(classes=1, per_class=2)
    augment.run(params(factor=8, recipe="classic8"), 0, raw, in_tmp / "out")
    rows = read_manifest(in_tmp / "out" / "manifest.csv")
    for group in by_parent(rows).values():
        assert len({r["sha256"] for r in group}) == 8
    for row in rows:
        applied = json.loads(row["params"])
        if row["kind"] == "original":
            assert applied == {} and row["recipe"] == ""
            continue
        assert row["recipe"] == "classic8" and set(applied) - {"threshold"} == set(Classic8.OPS)
        assert ("threshold" in applied) == applied["tozero"]
        source = decode_rgb(Path(row["parent"]).read_bytes(), 10**7)
        replayed = encode_jpeg(Classic8().replay(source, applied), 95)
        assert sha256_bytes(replayed) == row["sha256"]


def test_image_folder_with_a_corrupt_file(in_tmp: Path, make_image_folder: MakeFolder):
    raw = make_image_folder(classes=2, per_class=2)
    (raw / "class1" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (raw / "class0" / "empty.png").write_bytes(b"")
    (raw / "loose.jpg").write_bytes((raw / "class0" / "img0.jpg").read_bytes())
    report = augment.run(params(factor=2), 0, raw, in_tmp / "out")
    rejects = read_manifest(in_tmp / "out" / "rejects.csv")
    assert sorted((Path(r["path"]).name, r["reason"]) for r in rejects) == [
        ("broken.jpg", "unreadable"),
        ("empty.png", "unreadable"),
        ("loose.jpg", "no_class"),
    ]
    assert all(r["detail"] for r in rejects)
    assert len(read_manifest(in_tmp / "out" / "manifest.csv")) == 4 * 2
    assert report.n_in == report.n_kept + report.n_rejected == 7


def _tiny_png(path: Path, width: int, height: int) -> None:
    Image.fromarray(np.full((height, width, 3), 128, np.uint8)).save(path)


@pytest.mark.parametrize("recipe", ["medium", "heavy"])
def test_tiny_images_are_rejected_and_the_run_finishes(
    in_tmp: Path, make_image_folder: MakeFolder, recipe: str
):
    """A 1x1 PNG crashed albumentations' HSV shift and with it the whole run (issue 16)."""
    raw = make_image_folder(classes=2, per_class=2)
    for name, (w, h) in {"dot": (1, 1), "line": (1, 8), "speck": (2, 2)}.items():
        _tiny_png(raw / "class0" / f"{name}.png", w, h)
    report = augment.run(params(factor=3, recipe=recipe), 0, raw, in_tmp / "out")
    rejects = read_manifest(in_tmp / "out" / "rejects.csv")
    assert sorted((Path(r["path"]).name, r["reason"]) for r in rejects) == [
        ("dot.png", "too_small"), ("line.png", "too_small"), ("speck.png", "too_small"),
    ]  # fmt: skip
    assert "augment.min_side 8" in rejects[0]["detail"]
    assert len(read_manifest(in_tmp / "out" / "manifest.csv")) == 4 * 3
    assert report.n_in == report.n_kept + report.n_rejected == 7


def test_an_error_on_one_image_rejects_that_image_alone(
    in_tmp: Path, make_image_folder: MakeFolder
):
    """With the size guard off, the recipe's own error becomes the 1x1 image's reject (its
    message in `detail`), and no file of it is left behind."""
    raw = make_image_folder(classes=1, per_class=2)
    _tiny_png(raw / "class0" / "dot.png", 1, 1)
    report = augment.run(params(factor=8, recipe="medium", min_side=1), 0, raw, in_tmp / "out")
    (bad,) = read_manifest(in_tmp / "out" / "rejects.csv")
    assert bad["reason"] == "processing_failed" and "IndexError" in bad["detail"]
    assert not list((in_tmp / "out").rglob("dot-*"))
    assert (report.n_kept, len(read_manifest(in_tmp / "out" / "manifest.csv"))) == (2, 16)


def test_nothing_to_augment_is_an_error(in_tmp: Path, tmp_path: Path):
    empty = tmp_path / "empty"
    (empty / "class0").mkdir(parents=True)
    with pytest.raises(UserError, match="nothing to do"):
        augment.run(params(), 0, empty, in_tmp / "out")
    assert not (in_tmp / "out").exists()


def test_an_empty_class_folder_is_reported(in_tmp: Path, make_image_folder: MakeFolder):
    raw = make_image_folder(classes=1, per_class=2)
    (raw / "ghost").mkdir()
    report = augment.run(params(factor=2), 0, raw, in_tmp / "out")
    assert report.extra["empty_classes"] == ["ghost"]
    assert "ghost" in report.summary() and "ghost" in report.to_dict()["empty_classes"]


def test_manifest_input_uses_train_rows_and_carries_columns(
    in_tmp: Path, make_image_folder: MakeFolder
):
    raw = make_image_folder(classes=1, per_class=4)
    files = sorted((raw / "class0").glob("*.jpg"))
    rows = [
        {
            "path": f"raw/class0/{f.name}",
            "label": "class0",
            "source": f"photos/{f.name}",
            "sha256": sha256_bytes(f.read_bytes()),
            "group": f"g{i}",
            "split": split,
        }
        for i, (f, split) in enumerate(zip(files, ["train", "val", "train", "test"], strict=True))
    ]
    write_manifest(in_tmp / "split.csv", rows)
    report = augment.run(params(factor=2), 0, in_tmp / "split.csv", in_tmp / "out")
    out = read_manifest(in_tmp / "out" / "manifest.csv")
    assert sorted(by_parent(out)) == ["raw/class0/img0.jpg", "raw/class0/img2.jpg"]
    assert {r["source"] for r in out} == {"photos/img0.jpg", "photos/img2.jpg"}
    assert {r["group"] for r in out} == {"g0", "g2"} and {r["split"] for r in out} == {"train"}
    assert (report.n_in, report.n_kept) == (2, 2)


def test_an_augmented_face_box_follows_the_flip(in_tmp: Path, make_image_folder: MakeFolder):
    """A crop whose face sits off centre (detect shifted the square inside the photo): in
    a flipped variant the face box is mirrored with it, and detect's pixel measures, which
    describe the source, are not carried over."""
    raw = make_image_folder(classes=1, per_class=1)
    crop = next((raw / "class0").glob("*.jpg"))
    size = decode_rgb(crop.read_bytes(), 10**8).shape[0]
    row = {"path": f"raw/class0/{crop.name}", "label": "class0", "split": "train",
           "box": "[0,20,40,60]", "crop_matrix": "[[1,0,0],[0,1,0]]",
           "source_size": f"[{size},{size}]", "blur": "55.0",
           "phash": "ff00ff00ff00ff00"}  # fmt: skip
    write_manifest(in_tmp / "split.csv", [row])
    augment.run(params(factor=2), 0, in_tmp / "split.csv", in_tmp / "out")
    original, flipped = read_rows(in_tmp / "out" / "manifest.csv", AugmentedRow)
    assert flipped.params["hflip"] is True  # factor 2: variant 7, all three ops
    assert face_box_in_crop(original, size) == pytest.approx((0, 20, 40, 60))
    assert face_box_in_crop(flipped, size) == pytest.approx((size - 41, 20, size - 1, 60))
    assert (original.blur, original.phash) == (55.0, row["phash"])
    assert (flipped.blur, flipped.phash) == (None, "")


def test_generated_rows_keep_their_kind(in_tmp: Path, make_image_folder: MakeFolder):
    raw = make_image_folder(classes=1, per_class=2)
    real, fake = sorted((raw / "class0").glob("*.jpg"))
    row = {"label": "class0", "split": "train"}
    write_manifest(in_tmp / "split.csv", [{**row, "path": f"raw/class0/{real.name}"}])
    made = {"kind": "generated", "params": '{"expression":"smile"}', "seed": "42"}
    write_manifest(in_tmp / "gen.csv", [{**row, **made, "path": f"raw/class0/{fake.name}"}])
    run = augment.run
    run(params(factor=2), 0, in_tmp / "split.csv", in_tmp / "a", generated=in_tmp / "gen.csv")
    out = read_manifest(in_tmp / "a" / "manifest.csv")
    assert Counter(r["kind"] for r in out) == {"original": 1, "generated": 1, "augmented": 2}
    copy = next(r for r in out if r["kind"] == "generated")
    assert (copy["variant"], copy["params"], copy["seed"]) == ("0", made["params"], "42")
    no_gen = params(factor=2, include_generated=False)
    run(no_gen, 0, in_tmp / "split.csv", in_tmp / "b", generated=in_tmp / "gen.csv")
    assert len(read_manifest(in_tmp / "b" / "manifest.csv")) == 2


def test_dry_run_writes_nothing(in_tmp: Path, make_image_folder: MakeFolder):
    raw = make_image_folder(classes=2, per_class=2)
    report = augment.run(params(factor=5), 0, raw, in_tmp / "out", dry_run=True)
    assert not (in_tmp / "out").exists()
    assert report.extra["outputs"] == 20 and report.n_kept == 4


def test_classic8_factor_nine_is_an_error(in_tmp: Path, make_image_folder: MakeFolder):
    raw = make_image_folder(classes=1, per_class=1)
    with pytest.raises(UserError, match=r"at most 8 images per source \(the 2\^3"):
        augment.run(params(factor=9), 0, raw, in_tmp / "out")
    assert not (in_tmp / "out").exists()


def test_an_interrupted_run_is_incomplete_until_a_rerun_finishes_it(
    in_tmp: Path, make_image_folder: MakeFolder, monkeypatch: pytest.MonkeyPatch
):
    raw = make_image_folder(classes=2, per_class=3)
    real_write = augment.write_listed_file
    calls = {"n": 0}

    def write_then_die(path: str, data: bytes) -> None:
        calls["n"] += 1
        if calls["n"] == 10:
            Path(path).write_bytes(data[: len(data) // 2])  # what a killed writer leaves
            raise KeyboardInterrupt
        real_write(path, data)

    monkeypatch.setattr(augment, "write_listed_file", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        augment.run(params(factor=4), 0, raw, in_tmp / "out")
    assert not (in_tmp / "out" / "manifest.csv").exists()  # incomplete, and says so
    (in_tmp / "out" / "class0" / ".stale.jpg.abc.tmp").write_bytes(b"half")  # a killed replace

    monkeypatch.setattr(augment, "write_listed_file", real_write)
    augment.run(params(factor=4), 0, raw, in_tmp / "out")
    augment.run(params(factor=4), 0, raw, in_tmp / "fresh")
    assert not list((in_tmp / "out").rglob("*.tmp"))
    assert relative_files(in_tmp / "out") == relative_files(in_tmp / "fresh")  # bytes included


def test_rerun_removes_stale_outputs(in_tmp: Path, make_image_folder: MakeFolder):
    raw = make_image_folder(classes=1, per_class=2)
    augment.run(params(factor=6), 0, raw, in_tmp / "out")
    (in_tmp / "out" / "sheet.png").write_bytes(b"a contact sheet")
    augment.run(params(factor=2), 0, raw, in_tmp / "out")
    assert (in_tmp / "out" / "sheet.png").exists()
    listed = {r["path"] for r in read_manifest(in_tmp / "out" / "manifest.csv")}
    on_disk = {p.relative_to(in_tmp).as_posix() for p in (in_tmp / "out").rglob("*.jpg")}
    assert on_disk == listed and len(listed) == 4


def test_same_name_and_content_twice_is_one_source(in_tmp: Path, make_image_folder: MakeFolder):
    raw = make_image_folder(classes=1, per_class=1)
    for sub in ("a", "b"):
        (raw / "class0" / sub).mkdir()
        (raw / "class0" / sub / "img0.jpg").write_bytes((raw / "class0" / "img0.jpg").read_bytes())
    report = augment.run(params(factor=2), 0, raw, in_tmp / "out")
    rejects = read_manifest(in_tmp / "out" / "rejects.csv")
    assert [(r["path"], r["reason"]) for r in rejects] == [
        ("raw/class0/a/img0.jpg", "exact_duplicate"),
        ("raw/class0/b/img0.jpg", "exact_duplicate"),
    ]
    assert "raw/class0/img0.jpg" in rejects[0]["detail"]
    assert report.n_kept == 1 and len(read_manifest(in_tmp / "out" / "manifest.csv")) == 2


def test_decode_fast_path_only_for_plain_jpegs(tmp_path: Path):
    pixels = np.random.default_rng(0).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    plain = encode_jpeg(pixels, 90)
    decoded = decode(plain, 10**6, "plain.jpg")
    assert decoded.plain_jpeg and np.array_equal(decoded.rgb, decode_rgb(plain, 10**6))

    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90, exif=exif.tobytes())
    decoded = decode(buffer.getvalue(), 10**6, "rotated.jpg")
    assert not decoded.plain_jpeg and decoded.rgb.shape == (40, 24, 3)  # upright: re-encoded

    buffer = io.BytesIO()
    Image.fromarray(pixels[..., 0]).save(buffer, "JPEG")
    decoded = decode(buffer.getvalue(), 10**6, "gray.jpg")
    assert not decoded.plain_jpeg and decoded.rgb.shape == (24, 40, 3)


def test_refuses_to_write_into_its_source(in_tmp: Path, make_image_folder: MakeFolder):
    raw = make_image_folder(classes=1, per_class=1)
    with pytest.raises(UserError, match="must not contain each other"):
        augment.run(params(), 0, raw, raw / "augmented")
