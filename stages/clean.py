"""clean: drop faces that would mislead a few-shot classifier; write manifests only.

Checks run in this order, each on what the previous ones kept, so every row gets
the most specific reason: unreadable crop -> too_small -> blurry (relative to
its class) -> exact_duplicate -> near_duplicate -> label_conflict ->
wrong_identity -> over_class_limit -> class_too_small. Among duplicates the best
copy survives: the largest face, then the sharpest, then the first path.

The identity checks (label_conflict, wrong_identity; see ``pipeline.components.identity``)
need the embed stage's vectors; without ``embeddings`` they are skipped. Every
reject that involves another image names it in ``conflict_with`` (the kept copy
of a duplicate, the same face in another class, or for wrong_identity the image
it resembles most in the nearer class, else its own class's most typical image),
so ``prep show --rejects`` can put the two side by side.

Duplicates and groups are decided by pixels: two crops of a class are *the same
photo* when, registered onto each other, their pixels correlate at least
``same_photo_correlation`` (``pipeline.components.likeness.photo_match``; crops and their
sources, mirrored, retoned and re-encoded copies all do). Hashes and embeddings only
choose which pairs are worth that check (within ``near_duplicate_hamming`` bits, or
``duplicate_distance`` apart), so look-alike photos of one person are never chained
together by a loose threshold. A same-photo pair whose hashes are close (and, with
embeddings, whose faces agree) is a ``near_duplicate``; any other same-photo pair is
kept, sharing a ``group``, and split keeps every group on one side, so no copy of a
photo straddles train and test.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pipeline.components.embedders import Embeddings, load_embeddings
from pipeline.components.identity import (
    IdentityRule,
    components,
    distances,
    find_label_conflicts,
    find_wrong_identity,
    medoid_index,
)
from pipeline.components.likeness import hamming, laplacian_variance, phash, photo_match
from pipeline.core.config import CleanParams
from pipeline.core.crops import face_box_in_crop, valid_mask_of
from pipeline.core.errors import StageError
from pipeline.core.files import prepare_output_dir
from pipeline.core.images import ImageError, load_rgb
from pipeline.core.manifest import Row, by_label, read_manifest, reject, write_manifest
from pipeline.core.report import StageReport

STAGE = "clean"
_CROP_MAX_PIXELS = 64_000_000  # crops are ours and small; this only guards a corrupt file


def run(
    params: CleanParams, faces_manifest: Path, out_dir: Path, embeddings: Path | None = None
) -> StageReport:
    """Read detect's manifest (and embed's vectors), write ``manifest.csv`` and ``rejects.csv``."""
    rows = read_manifest(faces_manifest)
    vectors = load_embeddings(embeddings) if embeddings is not None else None
    prepare_output_dir(out_dir)
    kept, rejects, pictures = measure(rows)
    if vectors is not None:
        require_embedded(kept, vectors, embeddings)
    likeness = Likeness(params, vectors, pictures)
    for check in _checks(params, vectors, likeness):
        kept, dropped = check(kept)
        rejects += dropped
    assign_groups(kept, likeness.same_photo)
    write_manifest(out_dir / "manifest.csv", kept)
    write_manifest(out_dir / "rejects.csv", rejects)
    classes = sorted({row["label"] for row in kept})
    return StageReport.from_rows(
        STAGE, len(rows), kept, rejects, classes=len(classes), per_class=_per_class(kept),
        identity_checked=vectors is not None, **_group_counts(kept),
    )  # fmt: skip


Check = Callable[[list[Row]], tuple[list[Row], list[Row]]]


def _checks(params: CleanParams, vectors: Embeddings | None, likeness: Likeness) -> list[Check]:
    checks: list[Check] = [
        lambda rows: drop_too_small(rows, params.min_face_px),
        lambda rows: drop_blurry(rows, params.blur_relative),
        drop_exact_duplicates,
        lambda rows: drop_near_duplicates(rows, likeness.near_duplicate),
    ]
    if vectors is not None:
        checks += [
            lambda rows: drop_label_conflicts(rows, vectors, params),
            lambda rows: drop_wrong_identity(rows, vectors, params),
        ]
    checks += [
        lambda rows: drop_over_limit(rows, params.max_per_class),
        lambda rows: drop_small_classes(rows, params.min_per_class),
    ]
    return checks


@dataclass(frozen=True)
class Picture:
    """What clean keeps of a decoded crop: grey pixels, where the photo is, the face centre."""

    gray: np.ndarray
    valid: np.ndarray
    centre: tuple[float, float]


def measure(rows: list[Row]) -> tuple[list[Row], list[Row], dict[str, Picture]]:
    """Decode each crop once: add ``blur`` and ``phash`` to its row, keep its Picture.

    Sharpness is measured on the face (its box, minus any padding), so a headshot's
    background or a padded border does not count; the hash ignores padding too.
    """
    kept: list[Row] = []
    rejects: list[Row] = []
    pictures: dict[str, Picture] = {}
    for row in rows:
        try:
            rgb = load_rgb(Path(row["path"]), _CROP_MAX_PIXELS)
        except ImageError as err:
            rejects.append(reject(row, STAGE, err.reason, err.detail))
            continue
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        size = gray.shape[0]
        valid = valid_mask_of(row, size)
        x1, y1, x2, y2 = face_box_in_crop(row, size)
        face = np.zeros_like(valid)
        face[max(0, round(y1)) : round(y2), max(0, round(x1)) : round(x2)] = True
        blur = laplacian_variance(gray, face & valid)
        kept.append({**row, "blur": f"{blur:.2f}", "phash": phash(gray, valid)})
        pictures[row["path"]] = Picture(gray, valid, ((x1 + x2) / 2, (y1 + y2) / 2))
    return kept, rejects, pictures


class Likeness:
    """Which pairs of crops show the same photo, checked by pixels only when worth it."""

    def __init__(
        self, params: CleanParams, vectors: Embeddings | None, pictures: dict[str, Picture]
    ) -> None:
        self.params = params
        self.vectors = vectors
        self.pictures = pictures
        self._verdicts: dict[tuple[str, str], bool] = {}

    def candidate(self, a: Row, b: Row) -> bool:
        """Close hashes, or close embeddings: the pairs worth registering pixel by pixel."""
        if hamming(a["phash"], b["phash"]) <= self.params.near_duplicate_hamming:
            return True
        return self.vectors is not None and self.distance(a, b) <= self.params.duplicate_distance

    def distance(self, a: Row, b: Row) -> float:
        return _distance(self.vectors, a, b) if self.vectors is not None else float("inf")

    def same_photo(self, a: Row, b: Row) -> bool:
        if not self.candidate(a, b):
            return False
        key = (a["path"], b["path"]) if a["path"] < b["path"] else (b["path"], a["path"])
        if key not in self._verdicts:
            first, second = self.pictures[key[0]], self.pictures[key[1]]
            score = photo_match(
                first.gray, second.gray, first.valid, second.valid, (first.centre, second.centre)
            )
            self._verdicts[key] = score >= self.params.same_photo_correlation
        return self._verdicts[key]

    def near_duplicate(self, a: Row, b: Row) -> bool:
        """The same photo, framed alike (close hashes) and, with embeddings, the same face.

        A perceptual hash alone also matches different photos that merely look alike
        (the same person in the same pose and light), hence the pixel check.
        """
        if hamming(a["phash"], b["phash"]) > self.params.near_duplicate_hamming:
            return False
        if self.vectors is not None and self.distance(a, b) > self.params.duplicate_distance:
            return False
        return self.same_photo(a, b)


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


def drop_near_duplicates(
    rows: list[Row], same: Callable[[Row, Row], bool]
) -> tuple[list[Row], list[Row]]:
    """Re-encoded, resized or lightly edited copies within a class (``Likeness``)."""
    return _drop_grouped(rows, same, "near_duplicate")


def _distance(vectors: Embeddings, a: Row, b: Row) -> float:
    va, vb = vectors.get(a["sha256"]), vectors.get(b["sha256"])
    if va is None or vb is None:
        return float("inf")
    return float(np.linalg.norm(va.astype(np.float64) - vb))


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
                rejects.append(_reject_with(row, reason, detail, best))
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


# ---------------------------------------------------------------------------- identity


def require_embedded(rows: list[Row], vectors: Embeddings, source: Path | None) -> None:
    """Every readable crop must have a vector; a gap means the embeddings are stale."""
    missing = [row["path"] for row in rows if vectors.get(row["sha256"]) is None]
    if missing:
        raise StageError(
            f"{len(missing)} crop(s) have no embedding in {source} (e.g. {missing[0]}): "
            "the embeddings are older than the manifest; run `prep embed` (or `dvc repro`) again"
        )


def _matrix(rows: list[Row], vectors: Embeddings) -> np.ndarray:
    return np.asarray([vectors.vectors[row["sha256"]] for row in rows], dtype=np.float64)


def drop_label_conflicts(
    rows: list[Row], vectors: Embeddings, params: CleanParams
) -> tuple[list[Row], list[Row]]:
    """The same face in two classes (``label_conflict_policy`` decides which copies go)."""
    if not rows:
        return rows, []
    labels = [row["label"] for row in rows]
    conflicts = find_label_conflicts(
        labels, _matrix(rows, vectors), params.label_conflict_distance,
        params.label_conflict_policy,
    )  # fmt: skip
    rejects = []
    for conflict in conflicts:
        partner = rows[conflict.partner]
        detail = (
            f"the same face as {partner['path']} in class {partner['label']!r} "
            f"(embedding distance {conflict.distance:.3f} < {params.label_conflict_distance})"
        )
        if conflict.kept_label is not None:
            detail += f"; kept the copy in class {conflict.kept_label!r}, which it resembles"
        rejects.append(_reject_with(rows[conflict.index], "label_conflict", detail, partner))
    gone = {id(rows[c.index]) for c in conflicts}
    return [row for row in rows if id(row) not in gone], rejects


def drop_wrong_identity(
    rows: list[Row], vectors: Embeddings, params: CleanParams
) -> tuple[list[Row], list[Row]]:
    """Images far from their class's robust centre: probably someone else."""
    if not rows:
        return rows, []
    rule = IdentityRule(
        params.wrong_identity, params.wrong_identity_distance, params.wrong_identity_relative,
        params.wrong_identity_nearer_ratio,
    )  # fmt: skip
    matrix = _matrix(rows, vectors)
    outliers = find_wrong_identity([row["label"] for row in rows], matrix, rule)
    rejects = []
    for outlier in outliers:
        row = rows[outlier.index]
        other = _resembled(rows, matrix, outlier.index, outlier.nearer_label)
        detail = f"{outlier.describe()} [{params.wrong_identity} rule]"
        rejects.append(_reject_with(row, "wrong_identity", detail, other))
    gone = {id(rows[o.index]) for o in outliers}
    return [row for row in rows if id(row) not in gone], rejects


def _resembled(rows: list[Row], matrix: np.ndarray, index: int, nearer: str | None) -> Row | None:
    """For the audit sheet: the nearest image of the nearer class, else its class's medoid."""
    label = nearer or rows[index]["label"]
    idx = [i for i, row in enumerate(rows) if row["label"] == label and i != index]
    if not idx:
        return None
    if nearer is not None:
        return rows[idx[int(np.argmin(distances(matrix[[index]], matrix[idx])[0]))]]
    return rows[idx[medoid_index(matrix[idx])]]


def _reject_with(row: Row, reason: str, detail: str, other: Row | None) -> Row:
    """A reject naming the other image involved (``conflict_with``, its class in
    ``conflict_label``) for the audit sheet."""
    return {
        **reject(row, STAGE, reason, detail),
        "conflict_with": other["path"] if other else "",
        "conflict_label": other["label"] if other else "",
    }


# ---------------------------------------------------------------------------- groups

Same = Callable[[Row, Row], bool]


def assign_groups(rows: list[Row], same: Same | None = None) -> None:
    """Give each row a ``group`` id; split keeps every group on one side of the split.

    Within a class, rows that ``same`` links (directly or through others) share a
    group; every other row is its own group. Ids derive from content (the smallest
    sha256 prefix in the group), so they do not change when unrelated images are added.
    """
    for members in by_label(rows).values():
        for group in _components(members, same or (lambda a, b: False)):
            group_id = min(row["sha256"][:12] for row in group)
            for row in group:
                row["group"] = group_id


def _group_counts(rows: list[Row]) -> dict[str, int]:
    sizes: dict[str, int] = defaultdict(int)
    for row in rows:
        sizes[row["group"]] += 1
    shared = [n for n in sizes.values() if n > 1]
    return {"groups_of_lookalikes": len(shared), "images_in_groups": sum(shared)}


def _quality_rank(row: Row) -> tuple[float, float, str]:
    return (-float(row.get("face_px") or 0), -float(row.get("blur") or 0), row["path"])


def _components(rows: list[Row], same: Callable[[Row, Row], bool]) -> list[list[Row]]:
    """Connected components of the 'same' relation within one class (classes are small)."""
    edges = [
        (i, j) for i in range(len(rows)) for j in range(i + 1, len(rows)) if same(rows[i], rows[j])
    ]
    return [[rows[i] for i in group] for group in components(len(rows), edges)]


def _in_input_order(original: list[Row], subset: list[Row]) -> list[Row]:
    chosen = {id(row) for row in subset}
    return [row for row in original if id(row) in chosen]


def _per_class(rows: list[Row]) -> dict[str, int]:
    return {label: len(members) for label, members in by_label(rows).items()}
