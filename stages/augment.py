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

Speed comes from what the floor (decode + encode + write) is made of, not from
the transforms: long-lived workers that build the recipe once, one decode per
source (simplejpeg for plain JPEGs, ~3x faster than PIL), one encode per output,
the original's bytes copied rather than re-encoded, and a folder per class.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import simplejpeg

from pipeline.components.recipes import Recipe, load_recipe
from pipeline.core.config import AugmentParams
from pipeline.core.errors import UserError
from pipeline.core.files import (
    prepare_output_dir,
    remove_unlisted_files,
    sha256_bytes,
    sha256_file,
    write_listed_file,
)
from pipeline.core.images import ImageError, decode_rgb, encode_jpeg
from pipeline.core.manifest import (
    Row,
    columns_for,
    dumps,
    read_manifest,
    reject,
    scan_image_folder,
    to_posix,
    write_manifest,
)
from pipeline.core.parallel import parallel_map, resolve_workers
from pipeline.core.report import StageReport
from pipeline.core.seeds import derive_seed

STAGE = "augment"
# AugmentParams has no max_pixels: inputs are usually detect's crops. A raw folder
# may hold a decompression bomb, so keep detect's default limit here too.
MAX_PIXELS = 40_000_000
OUTPUT_SUFFIX = ".jpg"
REJECT_COLUMNS = ["path", "label", "source", "sha256", "stage", "reason", "detail"]


@dataclass(frozen=True)
class Job:
    """One source image and where its variants go (planned in the main process)."""

    row: Row
    sha256: str
    first_kind: str  # kind of variant 0 when it is the original: original / generated
    variants: tuple[int, ...]
    paths: tuple[str, ...]


@dataclass(frozen=True)
class Outcome:
    rows: list[Row]
    rejected: Row | None = None


def run(
    params: AugmentParams,
    seed: int,
    source: Path,
    out_dir: Path,
    generated: Path | None = None,
    dry_run: bool = False,
) -> StageReport:
    """Augment every source ``params.factor`` times; see the module docstring."""
    recipe = load_recipe(params.recipe)  # fails fast on a bad name or file
    variants = variant_numbers(recipe, params.factor, params.keep_original)
    rows, rejects, n_in = _read_inputs(source, out_dir, generated, params.include_generated)
    jobs, duplicates = _plan(rows, out_dir, variants)
    rejects += duplicates
    extra = {"factor": params.factor, "recipe": recipe.name, "keep_original": params.keep_original}
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


def variant_numbers(recipe: Recipe, factor: int, keep_original: bool) -> range:
    """The variant numbers of one source's outputs (a variant number names one image)."""
    if keep_original or not recipe.identity_at_zero:
        variants = range(factor)
    else:
        variants = range(1, factor + 1)
    recipe.check_variants(variants)
    return variants


# --- inputs -------------------------------------------------------------------------


def _read_inputs(
    source: Path, out_dir: Path, generated: Path | None, include_generated: bool
) -> tuple[list[tuple[Row, str]], list[Row], int]:
    """(rows with the kind of their variant 0, rejects, rows in) from every input."""
    listed: list[tuple[Row, str]] = []
    if source.is_dir():
        _check_disjoint(source, out_dir)
        rows, rejects = scan_image_folder(source)
        selected = [(row, _first_kind(row)) for row in rows]
    elif source.is_file():
        rejects, selected = [], []
        listed = [(row, _first_kind(row)) for row in _train_rows(read_manifest(source))]
    else:
        raise FileNotFoundError(f"{source} is neither a manifest nor an ImageFolder")
    if include_generated and generated is not None and generated.is_file():
        listed += [(row, "generated") for row in _train_rows(read_manifest(generated))]
    _check_outside(out_dir, [row for row, _ in listed])
    selected += listed
    return selected, rejects, len(selected) + len(rejects)


def _train_rows(rows: list[Row]) -> list[Row]:
    """Only training images are augmented; a manifest without splits is all training."""
    if rows and "split" in rows[0]:
        return [row for row in rows if row["split"] == "train"]
    return rows


def _first_kind(row: Row) -> str:
    return "generated" if row.get("kind") == "generated" else "original"


def _check_disjoint(source: Path, out_dir: Path) -> None:
    """Refuse to write into the input folder or to read our own outputs as inputs."""
    src, out = source.resolve(), out_dir.resolve()
    if out.is_relative_to(src) or src.is_relative_to(out):
        raise UserError(f"--out {out_dir} and the source {source} must not contain each other")


def _check_outside(out_dir: Path, rows: list[Row]) -> None:
    """Manifest rows may point anywhere, our own outputs included (a folder is checked whole)."""
    out = out_dir.resolve()
    for row in rows:
        if Path(row.get("path", "")).resolve().is_relative_to(out):
            raise UserError(f"source image {row['path']} is inside the output folder {out_dir}")


# --- planning -----------------------------------------------------------------------


def _plan(
    rows: list[tuple[Row, str]], out_dir: Path, variants: range
) -> tuple[list[Job], list[Row]]:
    """Output paths for every source, or a reject when a source cannot be planned."""
    prefix = to_posix(out_dir)  # once: resolving 10,000 output paths would cost syscalls
    jobs: list[Job] = []
    rejects: list[Row] = []
    claimed: dict[str, str] = {}
    for row, first_kind in rows:
        problem = _row_problem(row)
        if problem is None and not row.get("sha256"):
            problem = _fill_sha256(row)
        if problem is not None:
            rejects.append(reject(row, STAGE, *problem))
            continue
        stem = f"{prefix}/{row['label']}/{Path(row['path']).stem}-{row['sha256'][:8]}"
        if stem in claimed:
            detail = f"same class, name and content as {claimed[stem]}: same output files"
            rejects.append(reject(row, STAGE, "exact_duplicate", detail))
            continue
        claimed[stem] = row["path"]
        paths = tuple(f"{stem}_{v:02d}{OUTPUT_SUFFIX}" for v in variants)
        jobs.append(Job(row, row["sha256"], first_kind, tuple(variants), paths))
    return jobs, rejects


def _row_problem(row: Row) -> tuple[str, str] | None:
    """(reason, detail) when a row's label cannot be an output folder name."""
    label = row.get("label", "")
    if not label:
        return "no_class", "the row has no label"
    if label in {".", ".."} or Path(label).name != label or "\\" in label:
        return "outside_root", f"label {label!r} is not a plain folder name"
    if not row.get("path"):
        return "unreadable", "the row has no path"
    return None


def _fill_sha256(row: Row) -> tuple[str, str] | None:
    """Hash a row that came without one (seeds and names derive from content)."""
    try:
        row["sha256"] = sha256_file(Path(row["path"]))
    except OSError as err:
        return "unreadable", f"cannot read: {err}"
    return None


# --- output folder -----------------------------------------------------------------


def _expand_into(out_dir: Path, jobs: list[Job], params: AugmentParams, seed: int) -> list[Outcome]:
    stale_possible = prepare_output_dir(out_dir)
    outcomes = _expand_all(jobs, params, seed)
    if stale_possible:  # the sweep resolves every path: skip it for a new folder
        keep = {Path(row["path"]) for outcome in outcomes for row in outcome.rows}
        remove_unlisted_files(out_dir, keep, {OUTPUT_SUFFIX})  # not e.g. a contact sheet
    return outcomes


def _finish_folder(out_dir: Path, out_rows: list[Row], rejects: list[Row]) -> None:
    write_manifest(out_dir / "rejects.csv", rejects, columns_for(rejects, REJECT_COLUMNS))
    write_manifest(out_dir / "manifest.csv", out_rows)  # last: it marks the run complete


# --- work -----------------------------------------------------------------------------


@dataclass
class _Worker:
    """Per-process state: built once by the initializer, reused for every job."""

    recipe: Recipe
    seed: int
    quality: int
    keep_original: bool


_WORKER: _Worker | None = None


def _init_worker(recipe_spec: str, seed: int, quality: int, keep_original: bool) -> None:
    global _WORKER
    _WORKER = _Worker(load_recipe(recipe_spec), seed, quality, keep_original)


def _expand_all(jobs: list[Job], params: AugmentParams, seed: int) -> list[Outcome]:
    """Outcomes in job order, whatever order the pool worked in."""
    initargs = (params.recipe, seed, params.jpeg_quality, params.keep_original)
    order = _across_classes(jobs)
    threads = cv2.getNumThreads()
    # One core per worker: OpenCV's own threads would only contend with the other
    # workers. Set here, before the fork: in a child whose parent already ran OpenCV's
    # thread pool, cv2.setNumThreads deadlocks.
    cv2.setNumThreads(1)
    try:
        results = parallel_map(
            _expand, [jobs[i] for i in order], resolve_workers(params.workers), desc=STAGE,
            initializer=_init_worker, initargs=initargs, unit="sources",
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
        label = job.row["label"]
        keys.append((seen[label], index))
        seen[label] += 1
    return sorted(range(len(jobs)), key=keys.__getitem__)


def _expand(job: Job) -> Outcome:
    """Decode one source once, write all its variants; a bad file becomes a reject."""
    assert _WORKER is not None, "the pool initializer did not run"
    try:
        data = Path(job.row["path"]).read_bytes()
        image, copyable = decode(data, job.row["path"])
    except OSError as err:
        return Outcome([], reject(job.row, STAGE, "unreadable", f"cannot read file: {err}"))
    except ImageError as err:
        return Outcome([], reject(job.row, STAGE, err.reason, err.detail))
    rows = []
    for variant, path in zip(job.variants, job.paths, strict=True):
        if variant == 0 and _WORKER.keep_original:
            out = data if copyable else encode_jpeg(image, _WORKER.quality)
            extra = _original_columns(job)
        else:
            out, extra = _augment(image, job.sha256, variant)
        write_listed_file(path, out)
        rows.append(_output_row(job, path, out, variant, extra))
    return Outcome(rows)


def _original_columns(job: Job) -> dict[str, str]:
    """A copy keeps how it was made: nothing for a photo, the generator's params for a
    generated image (its ``params`` / ``seed`` columns, when the generate stage wrote them)."""
    row = job.row
    made = {"recipe": row.get("recipe", ""), "params": row.get("params") or "{}"}
    return {"kind": job.first_kind, **made, "seed": row.get("seed", "")}


def _augment(image: np.ndarray, sha256: str, variant: int) -> tuple[bytes, dict[str, str]]:
    assert _WORKER is not None
    seed = derive_seed(_WORKER.seed, sha256, variant)
    pixels, applied = _WORKER.recipe.apply(image, seed, variant)
    extra = {
        "kind": "augmented",
        "recipe": _WORKER.recipe.name,
        "params": dumps(applied),
        "seed": str(seed),
    }
    return encode_jpeg(pixels, _WORKER.quality), extra


def _output_row(job: Job, path: str, data: bytes, variant: int, extra: dict[str, str]) -> Row:
    return {
        **job.row,
        "path": path,
        "source": job.row.get("source") or job.row["path"],
        "sha256": sha256_bytes(data),
        "parent": job.row["path"],
        "variant": str(variant),
        "split": "train",
        **extra,
    }


def decode(data: bytes, name: str) -> tuple[np.ndarray, bool]:
    """(RGB pixels, whether ``data`` can be copied verbatim as the original).

    Plain JPEGs (no EXIF, which may rotate the picture; 3-channel) decode with
    simplejpeg, giving the same pixels as PIL at a third of the time. Anything
    else, corrupt files included, goes through ``decode_rgb`` for its exact
    conversions and reject reasons.
    """
    if _plain_jpeg_header(data):
        try:
            height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
            if colorspace == "YCbCr" and height * width <= MAX_PIXELS:
                return simplejpeg.decode_jpeg(data, colorspace="RGB"), True
        except ValueError:
            pass  # truncated or odd: let decode_rgb find the reason
    return decode_rgb(data, MAX_PIXELS, name=name), False


def _plain_jpeg_header(data: bytes) -> bool:
    """True for a JPEG whose header segments hold no EXIF, up to the image data."""
    if data[:2] != b"\xff\xd8":
        return False
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xDA:  # start of scan: the headers are over
            return True
        if marker == 0xE1 and data[pos + 4 : pos + 10] == b"Exif\x00\x00":
            return False
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return False  # malformed or unusual: the careful path decides
