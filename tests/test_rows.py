"""Typed manifest rows: parsed once, written back unchanged, unknown columns kept."""

from __future__ import annotations

import math
from pathlib import Path

from pipeline.core.manifest import read_manifest, read_rows, reject, write_manifest, write_rows
from pipeline.core.rows import (
    AugmentedRow,
    FaceRow,
    ImageRow,
    Kind,
    Reason,
    Split,
    SplitRow,
    columns_of,
    train_rows,
)


def _augmented() -> AugmentedRow:
    return AugmentedRow(
        path="aug/a/x_01.jpg", label="a", source="raw/a/x.jpg", sha256="f" * 64,
        box=(1.5, 2.0, 80.25, 90.0), landmarks=((10.0, 20.0), (30.5, 20.0)), prob=0.9987,
        face_px=78, face_index=0, crop_matrix=((1.0, 0.0, -3.5), (0.0, 1.0, 2.0)),
        source_size=(640, 480), face_outside=0.0, other_faces=(), blur=12.5, phash="ab" * 8,
        group="abc", split=Split.TRAIN, kind=Kind.AUGMENTED, parent="faces/a/x.jpg",
        variant=1, params={"flip": True, "angle": 3.25}, seed=123, backend="warp",
        expression="smile", identity_distance=math.inf, recipe="medium",
        extra={"note": "from the user"},
    )  # fmt: skip


def test_every_kind_of_cell_survives_a_round_trip(tmp_path: Path) -> None:
    row = _augmented()
    write_rows(tmp_path / "m.csv", [row])
    (back,) = read_rows(tmp_path / "m.csv", AugmentedRow)
    assert back == row and back.extra == {"note": "from the user"}
    assert back.split is Split.TRAIN and back.kind is Kind.AUGMENTED and back.face_px == 78
    assert back.box == (1.5, 2.0, 80.25, 90.0) and back.params == {"angle": 3.25, "flip": True}
    cells = read_manifest(tmp_path / "m.csv")[0]
    assert cells["identity_distance"] == "inf" and cells["box"] == "[1.5,2.0,80.25,90.0]"


def test_columns_follow_the_fields_and_unknown_columns_are_kept(tmp_path: Path) -> None:
    write_manifest(tmp_path / "in.csv", [{"zzz": "1", "label": "a", "path": "p.jpg"}])
    rows = read_rows(tmp_path / "in.csv", FaceRow)
    write_rows(tmp_path / "out.csv", rows)
    header = (tmp_path / "out.csv").read_text().splitlines()[0].split(",")
    assert header == [*columns_of(FaceRow), "zzz"]
    assert read_manifest(tmp_path / "out.csv")[0]["zzz"] == "1"


def test_a_later_stage_reads_an_earlier_manifest_with_defaults(tmp_path: Path) -> None:
    write_rows(tmp_path / "faces.csv", [FaceRow(path="c.jpg", label="a", face_px=50)])
    (row,) = read_rows(tmp_path / "faces.csv", SplitRow)
    assert row.face_px == 50 and row.split is None and row.group == ""


def test_rejects_hold_the_input_row_and_why(tmp_path: Path) -> None:
    kept = ImageRow(path="k.jpg", label="a")
    gone = reject(ImageRow(path="r.jpg", label="a"), "clean", "blurry", "too soft", kept)
    assert gone.reason is Reason.BLURRY
    write_rows(tmp_path / "rejects.csv", [gone])
    (cells,) = read_manifest(tmp_path / "rejects.csv")
    assert cells["path"] == "r.jpg" and cells["reason"] == "blurry"
    assert cells["conflict_with"] == "k.jpg" and cells["conflict_label"] == "a"


def test_train_rows_has_one_meaning() -> None:
    rows = [SplitRow(path=f"{s}.jpg", split=s) for s in (Split.TRAIN, Split.VAL, Split.TEST)]
    assert [r.path for r in train_rows(rows)] == ["train.jpg"]
    no_splits = [SplitRow(path="a.jpg"), SplitRow(path="b.jpg")]  # an ImageFolder's rows
    assert train_rows(no_splits) == no_splits


def test_an_empty_manifest_still_has_its_columns(tmp_path: Path) -> None:
    write_rows(tmp_path / "empty.csv", [], header=SplitRow)
    assert (tmp_path / "empty.csv").read_text().strip().split(",") == columns_of(SplitRow)
