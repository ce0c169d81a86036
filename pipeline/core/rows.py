"""The manifest contract as types: one row class per stage, enums for reasons, splits, kinds.

Rows grow along the pipeline and each class adds the columns its stage writes:

    ImageRow (a file of a class) > FaceRow (detect) > CleanRow (clean) > SplitRow (split)
    > GeneratedRow (generate) > AugmentedRow (augment)

so a later row is a complete earlier one plus its own columns, and ``dataclasses.replace``
derives one from another. Column order follows the fields. Cells are parsed once, when a
manifest is read (numbers, JSON boxes and params, enums), and formatted once, when it is
written; columns a row class does not know are kept in ``extra`` and written back, so
nothing a user or a newer stage put there is lost. A rejects manifest holds ``Rejected``
rows: the input row, the stage, a ``Reason`` and a detail for people.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from enum import StrEnum
from functools import cache
from typing import Any, get_type_hints

Box = tuple[float, float, float, float]


class Split(StrEnum):
    TRAIN = "train"
    VAL = "val"
    TEST = "test"


class Kind(StrEnum):
    ORIGINAL = "original"  # an input image, copied unchanged
    GENERATED = "generated"  # made by the generate stage (an expression variant)
    AUGMENTED = "augmented"  # made by an augmentation recipe


class Reason(StrEnum):
    """Why a row stops at a stage: the ``reason`` column of every rejects manifest."""

    OUTSIDE_ROOT = "outside_root"  # scan: a symlink leaving the dataset root
    NO_CLASS = "no_class"  # scan: a file not in a class folder
    UNREADABLE = "unreadable"
    TOO_LARGE = "too_large"  # a decompression bomb, refused from its header
    ENCODE_FAILED = "encode_failed"
    NO_FACE = "no_face"
    LOW_PROB = "low_prob"
    MULTIPLE_FACES = "multiple_faces"
    TOO_SMALL = "too_small"
    TRUNCATED_FACE = "truncated_face"
    BLURRY = "blurry"
    EXACT_DUPLICATE = "exact_duplicate"
    NEAR_DUPLICATE = "near_duplicate"
    LABEL_CONFLICT = "label_conflict"
    WRONG_IDENTITY = "wrong_identity"
    WRONG_LABEL = "wrong_label"  # clean (objects): another class is clearly more likely
    OVER_CLASS_LIMIT = "over_class_limit"
    CLASS_TOO_SMALL = "class_too_small"
    IDENTITY_LOST = "identity_lost"  # generate: the variant is no longer the person
    GENERATION_FAILED = "generation_failed"  # generate: the backend made no image
    PROCESSING_FAILED = "processing_failed"  # any stage: its code raised on this one image


@dataclass(kw_only=True)
class ImageRow:
    """One image file of one class."""

    path: str
    label: str = ""
    source: str = ""  # the raw file it came from
    sha256: str = ""  # of the file at ``path``
    extra: dict[str, str] = field(default_factory=dict, repr=False, compare=False)


@dataclass(kw_only=True)
class FaceRow(ImageRow):
    """A face crop written by detect (see ``pipeline.core.crops`` for the geometry)."""

    source_sha256: str = ""
    box: Box | None = None  # in the photo's pixels
    landmarks: tuple[tuple[float, float], ...] | None = None
    prob: float | None = None
    face_px: int | None = None
    face_index: int | None = None
    crop_matrix: tuple[tuple[float, float, float], ...] | None = None
    source_size: tuple[int, int] | None = None
    face_outside: float | None = None
    other_faces: tuple[tuple[float, ...], ...] | None = None
    blur: float | None = None  # sharpness of the face (measured in detect, on the crop it made)
    phash: str = ""  # 64-bit perceptual hash of the crop, hex


@dataclass(kw_only=True)
class CleanRow(FaceRow):
    group: str = ""  # copies of one photo share it; split keeps a group on one side


@dataclass(kw_only=True)
class SplitRow(CleanRow):
    split: Split | None = None


@dataclass(kw_only=True)
class GeneratedRow(SplitRow):
    """An image made from another: ``parent`` is its input, ``params`` what was applied."""

    kind: Kind | None = None
    parent: str = ""
    variant: int | None = None
    params: Any = None
    seed: int | None = None
    backend: str = ""
    expression: str = ""
    identity_distance: float | None = None


@dataclass(kw_only=True)
class AugmentedRow(GeneratedRow):
    recipe: str = ""


@dataclass(kw_only=True)
class Rejected:
    """A row that stops at ``stage``, and why."""

    row: ImageRow
    stage: str
    reason: Reason
    detail: str
    conflict_with: str = ""  # the other image involved (a kept duplicate, the same face...)
    conflict_label: str = ""


REJECT_COLUMNS = ("stage", "reason", "detail", "conflict_with", "conflict_label")


def train_rows(rows: Iterable[SplitRow]) -> list[SplitRow]:
    """The training images: split ``train``, or every row of a manifest without splits."""
    return [row for row in rows if row.split in (Split.TRAIN, None)]


def rows_of(rows: Iterable[SplitRow], split: Split) -> list[SplitRow]:
    return [row for row in rows if row.split == split]


# --- cells -------------------------------------------------------------------------------

Parse = Callable[[str], Any]
Format = Callable[[Any], str]


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def dumps(value: Any) -> str:
    """Compact, key-sorted JSON for manifest cells (stable across runs)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _number(kind: type) -> tuple[Parse, Format]:
    def parse(text: str) -> Any:
        return kind(float(text)) if kind is int else float(text)

    return parse, lambda value: str(value)


def _codec(annotation: Any) -> tuple[Parse, Format]:
    """How a field's cells are parsed and formatted, from its type."""
    text = str(annotation)
    if isinstance(annotation, type) and issubclass(annotation, StrEnum):
        return annotation, lambda value: value.value
    for enum in (Split, Kind, Reason):
        if enum.__name__ in text:
            return enum, lambda value: value.value
    if text.startswith(("int", "<class 'int'>")):
        return _number(int)
    if text.startswith(("float", "<class 'float'>")):
        return _number(float)
    if "tuple" in text or text == "typing.Any":
        return lambda cell: _tuples(json.loads(cell)), dumps
    return str, str


@cache
def _codecs(cls: type) -> dict[str, tuple[Parse, Format]]:
    hints = get_type_hints(cls)
    return {f.name: _codec(hints[f.name]) for f in fields(cls) if f.name != "extra"}


def columns_of(cls: type) -> list[str]:
    return list(_codecs(cls))


def parse_row(cls: type[ImageRow], cells: dict[str, str]) -> ImageRow:
    """A typed row from one CSV row; unknown columns go to ``extra``, empty cells to defaults."""
    codecs = _codecs(cls)
    known: dict[str, Any] = {}
    extra: dict[str, str] = {}
    for name, cell in cells.items():
        if name not in codecs:
            extra[name] = cell or ""
        elif cell not in (None, ""):
            known[name] = codecs[name][0](cell)
    return cls(**known, extra=extra)


def format_row(row: ImageRow | Rejected) -> dict[str, str]:
    """The CSV cells of a row (a reject: its input row's cells, then why it stopped)."""
    if isinstance(row, Rejected):
        cells = format_row(row.row)
        return cells | {name: str(getattr(row, name)) for name in REJECT_COLUMNS}
    codecs = _codecs(type(row))
    cells = {}
    for name, (_, fmt) in codecs.items():
        value = getattr(row, name)
        cells[name] = "" if value is None or value == "" else fmt(value)
    return cells | row.extra


def column_order(rows: Sequence[ImageRow | Rejected], header: type | None = None) -> list[str]:
    """Known columns in field order (the most derived row class first), then the extras."""
    classes = [type(r.row if isinstance(r, Rejected) else r) for r in rows] or [header or ImageRow]
    known = columns_of(max(classes, key=lambda cls: len(columns_of(cls))))
    order = known + [c for cls in classes for c in columns_of(cls) if c not in known]
    if any(isinstance(r, Rejected) for r in rows):
        order += list(REJECT_COLUMNS)
    extras = sorted({key for r in rows for key in _extra_of(r)} - set(order))
    return list(dict.fromkeys(order)) + extras


def _extra_of(row: ImageRow | Rejected) -> dict[str, str]:
    return (row.row if isinstance(row, Rejected) else row).extra
