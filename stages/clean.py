"""clean: drop faces that would mislead a few-shot classifier; write manifests only.

Checks run in this order, each on what the previous ones kept, so every row gets
the most specific reason: unreadable crop -> too_small -> blurry (relative to
its class) -> exact_duplicate -> near_duplicate -> label_conflict ->
wrong_identity -> over_class_limit -> class_too_small. Among duplicates the best
copy survives (``best_copy``): the largest face, then the highest source JPEG quality,
then the sharpest, then the first path; the reject's ``detail`` says why.
With label checks (``clean.checks``; objects) wrong_label takes wrong_identity's place.

Sharpness and hashes come from detect, which measured them on the crops it made; only
rows without them (a manifest from elsewhere) are decoded here. The identity checks
(label_conflict, wrong_identity; see ``pipeline.components.identity``) need the embed
stage's vectors; without ``embeddings`` they are skipped. Every reject that involves
another image names it in ``conflict_with`` (the kept copy of a duplicate, the same face
in another class, or for wrong_identity the image it resembles most in the nearer class,
else its own class's most typical image), so ``prep show --rejects`` can show both.

Duplicates and groups are decided by pixels (``pipeline.components.likeness``): two
crops of a class are *the same photo* (``SamePhotoRule.verified``) when, registered onto
each other, they correlate at least ``same_photo_correlation`` and no region of the face
differs by more than ``same_photo_region``, or when at least ``same_photo_keypoints`` of
their SIFT keypoint matches (``same_photo_keypoint_share`` of them) land exactly under one
similarity, counted outside the cells a mark (a watermark) covers where no other region
differs by more than ``same_photo_marked_region``. Hashes and embeddings only choose the
pairs worth that check. A
same-photo pair is a ``near_duplicate``. A *possible* copy (the correlation alone: a
heavily edited copy both tests miss, or another photo of the same sitting) is kept,
sharing a ``group``, and split keeps every group on one side, so no copy of a photo
straddles train and test. Sets of copies and groups are complete (``_cliques``: every
pair alike), so a series of similar shots is never chained into one set.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from pipeline.components.embedders import Embeddings, load_embeddings
from pipeline.components.identity import (
    IdentityRule,
    distances,
    find_label_conflicts,
    find_wrong_identity,
    medoid_index,
)
from pipeline.components.label_checks import check_kind, drop_wrong_labels
from pipeline.components.likeness import (
    Likeness,
    Picture,
    SamePhotoRule,
    hamming,
    source_quality,
)
from pipeline.core.config import CleanParams
from pipeline.core.errors import StageError, nothing_to_do
from pipeline.core.files import prepare_output_dir
from pipeline.core.images import MAX_PIXELS, ImageError, load_rgb
from pipeline.core.manifest import by_label, read_rows, reject, write_rows
from pipeline.core.report import StageReport
from pipeline.core.rows import CleanRow, Reason, Rejected

STAGE = "clean"
Kept = list[CleanRow]
Dropped = tuple[Kept, list[Rejected]]
Same = Callable[[CleanRow, CleanRow], bool]


def run(
    params: CleanParams, faces_manifest: Path, out_dir: Path, embeddings: Path | None = None
) -> StageReport:
    """Read detect's manifest (and embed's vectors), write ``manifest.csv`` and ``rejects.csv``."""
    rows = read_rows(faces_manifest, CleanRow)
    if not rows:
        raise nothing_to_do(STAGE, f"{faces_manifest} lists no faces")
    vectors = load_embeddings(embeddings) if embeddings is not None else None
    prepare_output_dir(out_dir)
    kept, rejects = readable(rows, vectors, embeddings)
    rule = SamePhotoRule.of(params)
    likeness = Likeness(params.near_duplicate_hamming, params.duplicate_distance, rule, vectors)
    for check in _checks(params, vectors, likeness):
        kept, dropped = check(kept)
        rejects += dropped
    kept = assign_groups(kept, likeness.possible_copy)
    write_rows(out_dir / "manifest.csv", kept, header=CleanRow)
    write_rows(out_dir / "rejects.csv", rejects)
    classes = sorted({row.label for row in kept})
    return StageReport.from_rows(
        STAGE, len(rows), kept, rejects, classes=len(classes), per_class=_per_class(kept),
        identity_checked=vectors is not None, **_group_counts(kept),
    )  # fmt: skip


Check = Callable[[Kept], Dropped]


def _checks(params: CleanParams, vectors: Embeddings | None, likeness: Likeness) -> list[Check]:
    checks: list[Check] = [
        lambda rows: drop_too_small(rows, params.min_face_px),
        lambda rows: drop_blurry(rows, params.blur_relative),
        lambda rows: _drop_grouped(rows, lambda a, b: a.sha256 == b.sha256, Reason.EXACT_DUPLICATE),
        lambda rows: _drop_grouped(rows, likeness.same_photo, Reason.NEAR_DUPLICATE),
    ]
    if vectors is not None:
        checks.append(lambda rows: drop_label_conflicts(rows, vectors, params))
        if check_kind(params) == "labels":  # objects: wrong_label (label_checks)
            checks.append(
                lambda rows: drop_wrong_labels(rows, _matrix(rows, vectors), params, STAGE)
            )
        else:
            checks.append(lambda rows: drop_wrong_identity(rows, vectors, params))
    checks += [
        lambda rows: drop_over_limit(rows, params.max_per_class),
        lambda rows: drop_small_classes(rows, params.min_per_class),
    ]
    return checks


def readable(
    rows: Kept, vectors: Embeddings | None, source: Path | None
) -> tuple[Kept, list[Rejected]]:
    """Rows whose crops can be used: measured (by detect, else here) and, with embeddings,
    embedded. A crop embed could not read is rejected as unreadable; a readable crop
    without a vector means the embeddings are older than the manifest: an error."""
    kept, rejects = [], []
    for row in rows:
        unmeasured = row.blur is None or not row.phash
        missing = vectors is not None and vectors.get(row.sha256) is None
        if not (unmeasured or missing):
            kept.append(row)
            continue
        try:
            picture = Picture.of_row(load_rgb(Path(row.path), MAX_PIXELS), row)
        except ImageError as err:
            rejects.append(reject(row, STAGE, err.reason, err.detail))
            continue
        if missing:
            raise StageError(
                f"crop {row.path} has no embedding in {source}: the embeddings are older "
                "than the manifest; run `prep embed` (or `dvc repro`) again"
            )
        kept.append(replace(row, blur=round(picture.sharpness(), 2), phash=picture.hash()))
    return kept, rejects


def drop_too_small(rows: Kept, min_face_px: int) -> Dropped:
    kept, rejects = [], []
    for row in rows:
        if row.face_px is not None and row.face_px < min_face_px:
            detail = f"face is {row.face_px}px, below clean.min_face_px={min_face_px}"
            rejects.append(reject(row, STAGE, Reason.TOO_SMALL, detail))
        else:
            kept.append(row)
    return kept, rejects


def drop_blurry(rows: Kept, relative: float) -> Dropped:
    """Blur is judged against the class median: sharpness differs a lot between sources."""
    medians = {
        label: float(np.median([r.blur for r in members]))
        for label, members in by_label(rows).items()
    }
    kept, rejects = [], []
    for row in rows:
        median = medians[row.label]
        if row.blur < relative * median:  # type: ignore[operator]
            detail = f"sharpness {row.blur:.1f} < {relative} x class median {median:.1f}"
            rejects.append(reject(row, STAGE, Reason.BLURRY, detail))
        else:
            kept.append(row)
    return kept, rejects


def _drop_grouped(rows: Kept, same: Same, reason: Reason) -> Dropped:
    kept, rejects = [], []
    for members in by_label(rows).values():
        for group in _cliques(members, same):
            best = best_copy(group)
            kept.append(best)
            for row in (r for r in group if r is not best):
                detail = f"{reason.replace('_', ' ')} of {best.path}"
                if reason == Reason.NEAR_DUPLICATE:
                    detail += f" (hash distance {hamming(row.phash, best.phash)})"
                detail += f"; kept that copy: {_why_best(best, row)}"
                rejects.append(reject(row, STAGE, reason, detail, best))
    return _in_input_order(rows, kept), rejects


def best_copy(copies: Kept) -> CleanRow:
    """Of copies of one photo, the one to keep: the most face pixels (faces within
    ``_SAME_RESOLUTION`` of the largest count as one size: detector boxes jitter by a few
    pixels), then the highest JPEG quality of its source, then the sharpest, then the
    first path. So a quality-60 re-encode never displaces its quality-92 original."""
    largest = max(row.face_px or 0 for row in copies)
    sized = [row for row in copies if (row.face_px or 0) >= _SAME_RESOLUTION * largest]
    return min(sized, key=lambda r: (-source_quality(r.source), -(r.blur or 0.0), r.path))


def _why_best(best: CleanRow, other: CleanRow) -> str:
    """Why ``best_copy`` chose ``best`` over ``other``, for the reject's detail."""
    if (other.face_px or 0) < _SAME_RESOLUTION * (best.face_px or 0):
        return f"larger face ({best.face_px} px against {other.face_px} px)"
    quality, other_quality = source_quality(best.source), source_quality(other.source)
    if quality != other_quality:
        return f"higher source quality (JPEG quality {quality} against {other_quality})"
    if (best.blur or 0.0) != (other.blur or 0.0):
        return f"sharper ({best.blur:.0f} against {other.blur:.0f})"
    return "same size, quality and sharpness; first path"


def drop_over_limit(rows: Kept, max_per_class: int | None) -> Dropped:
    if max_per_class is None:
        return rows, []
    kept, rejects = [], []
    for members in by_label(rows).values():
        ranked = sorted(members, key=_quality_rank)
        kept += ranked[:max_per_class]
        for row in ranked[max_per_class:]:
            detail = f"class keeps its {max_per_class} best (clean.max_per_class)"
            rejects.append(reject(row, STAGE, Reason.OVER_CLASS_LIMIT, detail))
    return _in_input_order(rows, kept), rejects


def drop_small_classes(rows: Kept, min_per_class: int) -> Dropped:
    kept, rejects = [], []
    for label, members in by_label(rows).items():
        if len(members) >= min_per_class:
            kept += members
            continue
        detail = (
            f"class {label!r} has {len(members)} usable image(s) after cleaning, "
            f"fewer than clean.min_per_class={min_per_class}"
        )
        rejects += [reject(row, STAGE, Reason.CLASS_TOO_SMALL, detail) for row in members]
    return _in_input_order(rows, kept), rejects


# ---------------------------------------------------------------------------- identity


def _matrix(rows: Kept, vectors: Embeddings) -> np.ndarray:
    return np.asarray([vectors.vectors[row.sha256] for row in rows], dtype=np.float64)


def drop_label_conflicts(rows: Kept, vectors: Embeddings, params: CleanParams) -> Dropped:
    """The same face in two classes (``label_conflict_policy`` decides which copies go)."""
    if not rows:
        return rows, []
    conflicts = find_label_conflicts(
        [row.label for row in rows], _matrix(rows, vectors), params.label_conflict_distance,
        params.label_conflict_policy,
    )  # fmt: skip
    rejects = []
    for conflict in conflicts:
        partner = rows[conflict.partner]
        detail = (
            f"the same face as {partner.path} in class {partner.label!r} "
            f"(embedding distance {conflict.distance:.3f} < {params.label_conflict_distance})"
        )
        if conflict.kept_label is not None:
            detail += f"; kept the copy in class {conflict.kept_label!r}, which it resembles"
        row = rows[conflict.index]
        rejects.append(reject(row, STAGE, Reason.LABEL_CONFLICT, detail, partner))
    gone = {id(rows[c.index]) for c in conflicts}
    return [row for row in rows if id(row) not in gone], rejects


def drop_wrong_identity(rows: Kept, vectors: Embeddings, params: CleanParams) -> Dropped:
    """Images far from their class's robust centre: probably someone else."""
    if not rows:
        return rows, []
    rule = IdentityRule(
        params.wrong_identity, params.wrong_identity_distance, params.wrong_identity_relative,
        params.wrong_identity_nearer_ratio,
    )  # fmt: skip
    matrix = _matrix(rows, vectors)
    outliers = find_wrong_identity([row.label for row in rows], matrix, rule)
    rejects = []
    for outlier in outliers:
        other = _resembled(rows, matrix, outlier.index, outlier.nearer_label)
        detail = f"{outlier.describe()} [{params.wrong_identity} rule]"
        rejects.append(reject(rows[outlier.index], STAGE, Reason.WRONG_IDENTITY, detail, other))
    gone = {id(rows[o.index]) for o in outliers}
    return [row for row in rows if id(row) not in gone], rejects


def _resembled(rows: Kept, matrix: np.ndarray, index: int, nearer: str | None) -> CleanRow | None:
    """For the audit sheet: the nearest image of the nearer class, else its class's medoid."""
    label = nearer or rows[index].label
    idx = [i for i, row in enumerate(rows) if row.label == label and i != index]
    if not idx:
        return None
    if nearer is not None:
        return rows[idx[int(np.argmin(distances(matrix[[index]], matrix[idx])[0]))]]
    return rows[idx[medoid_index(matrix[idx])]]


# ---------------------------------------------------------------------------- groups


def assign_groups(rows: Kept, same: Same | None = None) -> Kept:
    """The rows with a ``group`` id; split keeps every group on one side of the split.

    Within a class, rows that ``same`` links pairwise (every pair of the group, see
    ``_cliques``) share a group; every other row is its own group. Ids derive from
    content (the smallest sha256 prefix in the group), so they do not change when
    unrelated images are added.
    """
    group_of: dict[int, str] = {}
    for members in by_label(rows).values():
        for group in _cliques(members, same or (lambda a, b: False)):
            group_id = min(row.sha256[:12] for row in group)
            group_of.update((id(row), group_id) for row in group)
    return [replace(row, group=group_of[id(row)]) for row in rows]


def _group_counts(rows: Kept) -> dict[str, int]:
    sizes: dict[str, int] = defaultdict(int)
    for row in rows:
        sizes[row.group] += 1
    shared = [n for n in sizes.values() if n > 1]
    return {"groups_of_lookalikes": len(shared), "images_in_groups": sum(shared)}


_SAME_RESOLUTION = 0.85  # faces this close in size count as one resolution (detector jitter)


def _quality_rank(row: CleanRow) -> tuple[float, float, str]:
    return (-(row.face_px or 0), -(row.blur or 0.0), row.path)


def _cliques(rows: Kept, same: Same) -> list[Kept]:
    """Groups of one class in which *every* pair is ``same`` (complete linkage).

    Connected components would chain a series (A like B, B like C, though A is not C) into
    one group that swallows a class; here a row joins a group only if it matches all of
    it, so one doubtful pair never drags in a third photo.
    """
    clusters = [[i] for i in range(len(rows))]
    owner = list(range(len(rows)))
    for i in range(len(rows)):
        for j in range(i + 1, len(rows)):
            mine, theirs = owner[i], owner[j]
            if mine == theirs or not same(rows[i], rows[j]):
                continue
            if all(same(rows[x], rows[y]) for x in clusters[mine] for y in clusters[theirs]):
                for k in clusters[theirs]:
                    owner[k] = mine
                clusters[mine] += clusters[theirs]
                clusters[theirs] = []
    return [[rows[i] for i in sorted(cluster)] for cluster in clusters if cluster]


def _in_input_order(original: Kept, subset: Kept) -> Kept:
    chosen = {id(row) for row in subset}
    return [row for row in original if id(row) in chosen]


def _per_class(rows: Kept) -> dict[str, int]:
    return {label: len(members) for label, members in by_label(rows).items()}
