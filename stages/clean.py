"""clean: drop faces that would mislead a few-shot classifier; write manifests only.

Checks run in this order, each on what the previous ones kept, so every row gets
the most specific reason: unreadable crop -> too_small -> blurry (relative to
its class) -> exact_duplicate -> near_duplicate -> over_class_limit ->
class_too_small. Among duplicates the best copy survives: the largest face, then
the sharpest, then the first path.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from pipeline.config import CleanParams
from pipeline.files import prepare_output_dir
from pipeline.images import ImageError, load_rgb
from pipeline.manifest import Row, by_label, read_manifest, reject, write_manifest
from pipeline.report import StageReport

STAGE = "clean"
_CROP_MAX_PIXELS = 64_000_000  # crops are ours and small; this only guards a corrupt file


def run(params: CleanParams, faces_manifest: Path, out_dir: Path) -> StageReport:
    """Read detect's manifest, write ``out_dir/manifest.csv`` and ``rejects.csv``."""
    rows = read_manifest(faces_manifest)
    prepare_output_dir(out_dir)
    kept, rejects = measure(rows)
    for check in _checks(params):
        kept, dropped = check(kept)
        rejects += dropped
    assign_groups(kept)
    write_manifest(out_dir / "manifest.csv", kept)
    write_manifest(out_dir / "rejects.csv", rejects)
    classes = sorted({row["label"] for row in kept})
    return StageReport.from_rows(
        STAGE, len(rows), kept, rejects, classes=len(classes), per_class=_per_class(kept)
    )


Check = Callable[[list[Row]], tuple[list[Row], list[Row]]]


def _checks(params: CleanParams) -> list[Check]:
    return [
        lambda rows: drop_too_small(rows, params.min_face_px),
        lambda rows: drop_blurry(rows, params.blur_relative),
        drop_exact_duplicates,
        lambda rows: drop_near_duplicates(rows, params.near_duplicate_hamming),
        lambda rows: drop_over_limit(rows, params.max_per_class),
        lambda rows: drop_small_classes(rows, params.min_per_class),
    ]


def measure(rows: list[Row]) -> tuple[list[Row], list[Row]]:
    """Add ``blur`` (variance of the Laplacian) and ``phash`` (64-bit, hex) to each row."""
    kept: list[Row] = []
    rejects: list[Row] = []
    for row in rows:
        try:
            rgb = load_rgb(Path(row["path"]), _CROP_MAX_PIXELS)
        except ImageError as err:
            rejects.append(reject(row, STAGE, err.reason, err.detail))
            continue
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        kept.append({**row, "blur": f"{laplacian_variance(gray):.2f}", "phash": phash(gray)})
    return kept, rejects


def laplacian_variance(gray: np.ndarray) -> float:
    """Sharpness: low when edges are smeared. Crops share one size, so values compare."""
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def phash(gray: np.ndarray) -> str:
    """Perceptual hash: signs of the 8x8 lowest DCT frequencies against their median.

    Robust to re-encoding, resizing and mild colour change, unlike a content hash.
    """
    small = cv2.resize(gray, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:8, :8].flatten()
    bits = low > np.median(low[1:])  # the DC term would dominate the median
    return f"{int(''.join('1' if b else '0' for b in bits), 2):016x}"


def hamming(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


def drop_too_small(rows: list[Row], min_face_px: int) -> tuple[list[Row], list[Row]]:
    kept, rejects = [], []
    for row in rows:
        face_px = int(float(row.get("face_px") or 0))
        if row.get("face_px") and face_px < min_face_px:
            detail = f"face is {face_px}px, below clean.min_face_px={min_face_px}"
            rejects.append(reject(row, STAGE, "too_small", detail))
        else:
            kept.append(row)
    return kept, rejects


def drop_blurry(rows: list[Row], relative: float) -> tuple[list[Row], list[Row]]:
    """Blur is judged against the class median: sharpness differs a lot between sources."""
    medians = {
        label: float(np.median([float(r["blur"]) for r in members]))
        for label, members in by_label(rows).items()
    }
    kept, rejects = [], []
    for row in rows:
        limit = relative * medians[row["label"]]
        if float(row["blur"]) < limit:
            detail = (
                f"sharpness {float(row['blur']):.1f} < {relative} x class median "
                f"{medians[row['label']]:.1f}"
            )
            rejects.append(reject(row, STAGE, "blurry", detail))
        else:
            kept.append(row)
    return kept, rejects


def drop_exact_duplicates(rows: list[Row]) -> tuple[list[Row], list[Row]]:
    """Byte-identical crops (the same photo under two names) within a class."""
    return _drop_grouped(rows, lambda a, b: a["sha256"] == b["sha256"], "exact_duplicate")


def drop_near_duplicates(rows: list[Row], max_hamming: int) -> tuple[list[Row], list[Row]]:
    """Re-encoded, resized or lightly edited copies within a class."""
    return _drop_grouped(
        rows, lambda a, b: hamming(a["phash"], b["phash"]) <= max_hamming, "near_duplicate"
    )


def _drop_grouped(
    rows: list[Row], same: Callable[[Row, Row], bool], reason: str
) -> tuple[list[Row], list[Row]]:
    kept, rejects = [], []
    for members in by_label(rows).values():
        for group in _components(members, same):
            best, *others = sorted(group, key=_quality_rank)
            kept.append(best)
            for row in others:
                detail = f"{reason.replace('_', ' ')} of {best['path']}"
                if reason == "near_duplicate":
                    detail += f" (hash distance {hamming(row['phash'], best['phash'])})"
                rejects.append(reject(row, STAGE, reason, detail))
    return _in_input_order(rows, kept), rejects


def drop_over_limit(rows: list[Row], max_per_class: int | None) -> tuple[list[Row], list[Row]]:
    if max_per_class is None:
        return rows, []
    kept, rejects = [], []
    for members in by_label(rows).values():
        ranked = sorted(members, key=_quality_rank)
        kept += ranked[:max_per_class]
        for row in ranked[max_per_class:]:
            detail = f"class keeps its {max_per_class} best (clean.max_per_class)"
            rejects.append(reject(row, STAGE, "over_class_limit", detail))
    return _in_input_order(rows, kept), rejects


def drop_small_classes(rows: list[Row], min_per_class: int) -> tuple[list[Row], list[Row]]:
    kept, rejects = [], []
    for label, members in by_label(rows).items():
        if len(members) >= min_per_class:
            kept += members
            continue
        detail = (
            f"class {label!r} has {len(members)} usable image(s) after cleaning, "
            f"fewer than clean.min_per_class={min_per_class}"
        )
        rejects += [reject(row, STAGE, "class_too_small", detail) for row in members]
    return _in_input_order(rows, kept), rejects


def assign_groups(rows: list[Row]) -> None:
    """Give each row a ``group`` id; split keeps every group on one side of the split.

    Rows that another check tied together (e.g. the same face twice) arrive with a
    shared ``group``; every other row is its own group. Ids derive from content
    (a sha256 prefix), so they do not change when unrelated images are added.
    """
    for row in rows:
        row["group"] = row.get("group") or row["sha256"][:12]


def _quality_rank(row: Row) -> tuple[float, float, str]:
    return (-float(row.get("face_px") or 0), -float(row.get("blur") or 0), row["path"])


def _components(rows: list[Row], same: Callable[[Row, Row], bool]) -> list[list[Row]]:
    """Connected components of the 'same' relation (union-find; classes are small)."""
    parent = list(range(len(rows)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(rows)):
        for j in range(i + 1, len(rows)):
            if same(rows[i], rows[j]):
                parent[root(j)] = root(i)
    groups: dict[int, list[Row]] = defaultdict(list)
    for i, row in enumerate(rows):
        groups[root(i)].append(row)
    return list(groups.values())


def _in_input_order(original: list[Row], subset: list[Row]) -> list[Row]:
    chosen = {id(row) for row in subset}
    return [row for row in original if id(row) in chosen]


def _per_class(rows: list[Row]) -> dict[str, int]:
    return {label: len(members) for label, members in by_label(rows).items()}
