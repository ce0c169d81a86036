"""augment: expand each training image into ``factor`` images with a recipe.

Input is a manifest (its ``split == train`` rows, or all rows without a split
column), optionally plus the generate stage's manifest, or any ImageFolder.
Output is ``out/<label>/<stem>-<sha8>_<variant>.jpg``, ``manifest.csv`` and
``rejects.csv``.

Variants: every source gives exactly ``factor`` outputs. With ``keep_original``
variant 0 is the source itself (its bytes copied when it is a plain RGB JPEG) and
variants 1..factor-1 come from the recipe; without it all ``factor`` outputs are
augmented, numbered 0..factor-1, except for a recipe whose variant 0 is the
identity (classic8), which then uses 1..factor so that no output is the original.
classic8 with a factor below 8 takes the most spread-out of its 8 combinations
instead (``Recipe.variant_numbers``), so the variant numbers can skip: factor 4 is
variants 0, 3, 5, 6 (each of flip, threshold and blur in two of the four).

Speed comes from what the floor (decode + encode + write) is made of, not from
the transforms: long-lived workers that build the recipe once, one decode per
source (``pipeline.core.images.decode``: simplejpeg for plain JPEGs, ~3x faster than
PIL), one encode per output,
the original's bytes copied rather than re-encoded, and a folder per class.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipeline.components.recipes import Recipe, load_recipe
from pipeline.core.config import AugmentParams
from pipeline.core.crops import geometry_from_row
from pipeline.core.errors import UserError, nothing_to_do
from pipeline.core.failures import failure_detail
from pipeline.core.files import (
    prepare_output_dir,
    remove_unlisted_files,
    sha256_bytes,
    sha256_file,
    write_listed_file,
)
from pipeline.core.images import MAX_PIXELS, Decoded, ImageError, decode, encode_jpeg
from pipeline.core.manifest import (
    empty_classes_report,
    read_rows,
    reject,
    scan_image_folder,
    to_posix,
    write_rows,
)
from pipeline.core.parallel import parallel_map, resolve_workers
from pipeline.core.report import StageReport
from pipeline.core.rows import (
    AugmentedRow,
    GeneratedRow,
    ImageRow,
    Kind,
    Reason,
    Rejected,
    Split,
    train_rows,
)
from pipeline.core.seeds import derive_seed

STAGE = "augment"
OUTPUT_SUFFIX = ".jpg"


@dataclass(frozen=True)
class Job:
    """One source image and where its variants go (planned in the main process)."""

    row: GeneratedRow  # a source: an original (kind None) or a generated variant
    sha256: str
    first_kind: Kind  # kind of variant 0 when it is the original: original / generated
    variants: tuple[int, ...]
    paths: tuple[str, ...]


@dataclass(frozen=True)
class Outcome:
    rows: list[AugmentedRow]
    rejected: Rejected | None = None


def run(
    params: AugmentParams,
    seed: int,
    source: Path,
    out_dir: Path,
    generated: Path | None = None,
    dry_run: bool = False,
) -> StageReport:
    """Augment every source ``params.factor`` times; see the module docstring."""
    recipe = load_recipe(params.recipe, params.domain)  # fails fast on a bad name or file
    variants = recipe.variant_numbers(params.factor, params.keep_original)
    rows, rejects, n_in = _read_inputs(source, out_dir, generated, params.include_generated)
    if not n_in:
        what = "a folder with no files" if source.is_dir() else "a manifest with no train rows"
        raise nothing_to_do(STAGE, f"{source} is {what}")
    jobs, duplicates = _plan(rows, out_dir, variants)
    rejects += duplicates
    extra = {"factor": params.factor, "recipe": recipe.name, "keep_original": params.keep_original}
    if source.is_dir():
        extra |= empty_classes_report(source)
    if dry_run:
        planned = len(jobs) * params.factor
        kept = [job.row for job in jobs]
        return StageReport.from_rows(
            STAGE, n_in, kept, rejects, outputs=planned, dry_run=True, **extra
        )

    started = time.perf_counter()
    outcomes = _expand_into(out_dir, jobs, params, seed)
    elapsed = time.perf_counter() - started
    out_rows = [row for outcome in outcomes for row in outcome.rows]
    rejects += [o.rejected for o in outcomes if o.rejected is not None]
    _finish_folder(out_dir, out_rows, rejects)
    kept = [job.row for job, outcome in zip(jobs, outcomes, strict=True) if outcome.rows]
    speed = round(len(out_rows) / elapsed, 1) if elapsed > 0 else 0.0
    runtime = {"seconds": round(elapsed, 2), "images_per_second": speed}
    return StageReport.from_rows(
        STAGE, n_in, kept, rejects, runtime=runtime, outputs=len(out_rows), **extra
    )


# --- inputs -------------------------------------------------------------------------


def _read_inputs(
    source: Path, out_dir: Path, generated: Path | None, include_generated: bool
) -> tuple[list[tuple[GeneratedRow, Kind]], list[Rejected], int]:
    """(rows with the kind of their variant 0, rejects, rows in) from every input."""
    listed: list[GeneratedRow] = []
    if source.is_dir():
        _check_disjoint(source, out_dir)
        scanned, rejects = scan_image_folder(source)
        selected = [GeneratedRow(**vars(row)) for row in scanned]
    elif source.is_file():
        rejects, selected = [], []
        listed = train_rows(read_rows(source, GeneratedRow))  # type: ignore[assignment]
    else:
        raise FileNotFoundError(f"{source} is neither a manifest nor an ImageFolder")
    if include_generated and generated is not None and generated.is_file():
        listed += train_rows(read_rows(generated, GeneratedRow))  # type: ignore[arg-type]
    _check_outside(out_dir, listed)
    selected += listed
    kinds = [
        (row, Kind.GENERATED if row.kind == Kind.GENERATED else Kind.ORIGINAL) for row in selected
    ]
    return kinds, rejects, len(selected) + len(rejects)


def _check_disjoint(source: Path, out_dir: Path) -> None:
    """Refuse to write into the input folder or to read our own outputs as inputs."""
    src, out = source.resolve(), out_dir.resolve()
    if out.is_relative_to(src) or src.is_relative_to(out):
        raise UserError(f"--out {out_dir} and the source {source} must not contain each other")


def _check_outside(out_dir: Path, rows: list[GeneratedRow]) -> None:
    """Manifest rows may point anywhere, our own outputs included (a folder is checked whole)."""
    out = out_dir.resolve()
    for row in rows:
        if row.path and Path(row.path).resolve().is_relative_to(out):
            raise UserError(f"source image {row.path} is inside the output folder {out_dir}")


# --- planning -----------------------------------------------------------------------


def _plan(
    rows: list[tuple[GeneratedRow, Kind]], out_dir: Path, variants: tuple[int, ...]
) -> tuple[list[Job], list[Rejected]]:
    """Output paths for every source, or a reject when a source cannot be planned."""
    prefix = to_posix(out_dir)  # once: resolving 10,000 output paths would cost syscalls
    jobs: list[Job] = []
    rejects: list[Rejected] = []
    claimed: dict[str, str] = {}
    for row, first_kind in rows:
        problem = _row_problem(row)
        if problem is None and not row.sha256:
            problem = _fill_sha256(row)
        if problem is not None:
            rejects.append(reject(row, STAGE, *problem))
            continue
        stem = f"{prefix}/{row.label}/{Path(row.path).stem}-{row.sha256[:8]}"
        if stem in claimed:
            detail = f"same class, name and content as {claimed[stem]}: same output files"
            rejects.append(reject(row, STAGE, Reason.EXACT_DUPLICATE, detail))
            continue
        claimed[stem] = row.path
        paths = tuple(f"{stem}_{v:02d}{OUTPUT_SUFFIX}" for v in variants)
        jobs.append(Job(row, row.sha256, first_kind, variants, paths))
    return jobs, rejects


def _row_problem(row: ImageRow) -> tuple[Reason, str] | None:
    """(reason, detail) when a row's label cannot be an output folder name."""
    if not row.label:
        return Reason.NO_CLASS, "the row has no label"
    if row.label in {".", ".."} or Path(row.label).name != row.label or "\\" in row.label:
        return Reason.OUTSIDE_ROOT, f"label {row.label!r} is not a plain folder name"
    if not row.path:
        return Reason.UNREADABLE, "the row has no path"
    return None


def _fill_sha256(row: ImageRow) -> tuple[Reason, str] | None:
    """Hash a row that came without one (seeds and names derive from content)."""
    try:
        row.sha256 = sha256_file(Path(row.path))
    except OSError as err:
        return Reason.UNREADABLE, f"cannot read: {err}"
    return None


# --- output folder -----------------------------------------------------------------


def _expand_into(out_dir: Path, jobs: list[Job], params: AugmentParams, seed: int) -> list[Outcome]:
    stale_possible = prepare_output_dir(out_dir)
    outcomes = _expand_all(jobs, params, seed)
    if stale_possible:  # the sweep resolves every path: skip it for a new folder
        keep = {Path(row.path) for outcome in outcomes for row in outcome.rows}
        remove_unlisted_files(out_dir, keep, {OUTPUT_SUFFIX})  # not e.g. a contact sheet
    return outcomes


def _finish_folder(out_dir: Path, out_rows: list[AugmentedRow], rejects: list[Rejected]) -> None:
    write_rows(out_dir / "rejects.csv", rejects)
    write_rows(out_dir / "manifest.csv", out_rows, header=AugmentedRow)  # last: run complete


# --- work -----------------------------------------------------------------------------


@dataclass
class Worker:
    """Per-process state: built once (the recipe), reused for every job."""

    recipe: Recipe
    seed: int
    quality: int
    keep_original: bool
    min_side: int


def build_worker(
    recipe_spec: str, domain: str, seed: int, quality: int, keep_original: bool, min_side: int
) -> Worker:
    return Worker(load_recipe(recipe_spec, domain), seed, quality, keep_original, min_side)


def _expand_all(jobs: list[Job], params: AugmentParams, seed: int) -> list[Outcome]:
    """Outcomes in job order, whatever order the pool worked in."""
    setup = partial(
        build_worker, params.recipe, params.domain, seed, params.jpeg_quality,
        params.keep_original, params.min_side,
    )  # fmt: skip
    order = _across_classes(jobs)
    threads = cv2.getNumThreads()
    # One core per worker: OpenCV's own threads would only contend with the other
    # workers. Set here, before the fork: in a child whose parent already ran OpenCV's
    # thread pool, cv2.setNumThreads deadlocks.
    cv2.setNumThreads(1)
    try:
        results = parallel_map(
            _expand, [jobs[i] for i in order], resolve_workers(params.workers), STAGE,
            setup=setup, unit="sources",
        )  # fmt: skip
        outcomes: list[Outcome | None] = [None] * len(jobs)
        for index, outcome in zip(order, results, strict=True):
            outcomes[index] = outcome
    finally:
        cv2.setNumThreads(threads)
    return [outcome for outcome in outcomes if outcome is not None]


def _across_classes(jobs: list[Job]) -> list[int]:
    """Job indices round-robin over classes.

    Creating files in one folder is serialised by the kernel; interleaving classes
    makes workers that run at the same time write into different folders.
    """
    seen: dict[str, int] = defaultdict(int)
    keys = []
    for index, job in enumerate(jobs):
        label = job.row.label
        keys.append((seen[label], index))
        seen[label] += 1
    return sorted(range(len(jobs)), key=keys.__getitem__)


def _expand(worker: Worker, job: Job) -> Outcome:
    """Decode one source once, write all its variants; a bad file becomes a reject.

    A source that fails half-way (a recipe raising on an odd picture) leaves no files,
    only its reject: the variants it already wrote are removed.
    """
    try:
        data = Path(job.row.path).read_bytes()
        decoded = decode(data, MAX_PIXELS, job.row.path)
    except OSError as err:
        return Outcome([], reject(job.row, STAGE, Reason.UNREADABLE, f"cannot read file: {err}"))
    except ImageError as err:
        return Outcome([], reject(job.row, STAGE, err.reason, _too_large_hint(err)))
    height, width = decoded.rgb.shape[:2]
    if min(height, width) < worker.min_side:
        detail = f"{width}x{height} px: shorter side < augment.min_side {worker.min_side}"
        return Outcome([], reject(job.row, STAGE, Reason.TOO_SMALL, detail))
    rows: list[AugmentedRow] = []
    for variant, path in zip(job.variants, job.paths, strict=True):
        try:
            out, row = _variant(worker, data, decoded, job, variant)
        except UserError:
            raise
        except Exception as err:  # this source fails, not the run
            for written in rows:
                Path(written.path).unlink(missing_ok=True)
            detail = f"variant {variant}: {failure_detail(err)}"
            return Outcome([], reject(job.row, STAGE, Reason.PROCESSING_FAILED, detail))
        write_listed_file(path, out)
        rows.append(replace(row, path=path, sha256=sha256_bytes(out), variant=variant))
    return Outcome(rows)


def _too_large_hint(err: ImageError) -> str:
    if err.reason != Reason.TOO_LARGE:
        return err.detail
    return f"{err.detail}; augment's limit is fixed: downscale the image first"


def _variant(
    worker: Worker, data: bytes, decoded: Decoded, job: Job, variant: int
) -> tuple[bytes, AugmentedRow]:
    """One output's bytes and row: the source itself (variant 0 kept) or a recipe's."""
    if variant == 0 and worker.keep_original:
        out = data if decoded.plain_jpeg else encode_jpeg(decoded.rgb, worker.quality)
        return out, _original_row(job)
    return _augment(worker, decoded.rgb, job, variant)


def _derived(job: Job) -> AugmentedRow:
    """The source's row as an output of it: same class and face, made from it, for training."""
    source = job.row
    made = {"parent": source.path, "split": Split.TRAIN, "source": source.source or source.path}
    return AugmentedRow(**(vars(source) | made))


def _original_row(job: Job) -> AugmentedRow:
    """A copy keeps how it was made: nothing for a photo, the generator's params and seed
    (and what it was) for a generated image."""
    return replace(_derived(job), kind=job.first_kind, params=job.row.params or {})


def _augment(
    worker: Worker, image: np.ndarray, job: Job, variant: int
) -> tuple[bytes, AugmentedRow]:
    seed = derive_seed(worker.seed, job.sha256, variant)
    pixels, applied = worker.recipe.apply(image, seed, variant)
    height, width = image.shape[:2]
    row = replace(
        _derived(job),
        kind=Kind.AUGMENTED,
        recipe=worker.recipe.name,
        params=applied,
        seed=seed,
        blur=None,  # detect measured the source's pixels, not these
        phash="",
        **_moved_geometry(job.row, worker.recipe.moved(applied, width, height), height),
    )
    return encode_jpeg(pixels, worker.quality), row


def _moved_geometry(source: GeneratedRow, moved: np.ndarray | None, size: int) -> dict[str, Any]:
    """The variant's map from the photo: the source's, followed by the recipe's moves, so
    the face box still finds the face in a flipped, turned variant (dlib's chip needs it);
    unknown (the face taken as centred) when the recipe moved pixels in ways it cannot say."""
    geometry = geometry_from_row(source, size)
    if geometry is None:
        return {}
    if moved is None:
        return {"crop_matrix": None, "source_size": None}
    return geometry.then(moved).cells()
