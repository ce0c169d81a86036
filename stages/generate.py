"""generate: expression variants of each training image, kept only if still the same person.

For every training row, ``variants_per_image`` variants are made by the chosen
backend (`prep list generators`); variant k gets ``expressions[k % n]`` and the
seed ``derive_seed(seed, source sha256, k)``, so outputs never depend on worker
count, process or order (a diffusion batch of another size may round a pixel one
level apart: ``batch_size`` is a param). Each variant passes the identity gate
(embedding distance to its source below ``identity_threshold``) or is rejected as
``identity_lost`` with the distance. Output: ``out/<label>/<stem>-<sha8>_<expression>_<k>.jpg``,
``manifest.csv`` (kind ``generated``, ``parent``, backend, expression, seed,
identity distance, applied params), ``rejects.csv`` and per-expression metrics.

Disabled (the default), the stage writes an empty manifest quickly and imports
no model library, so the DVC graph is the same either way.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.components.generators.shard import Shard, launched_shard
from pipeline.core.config import EmbedParams, GenerateParams
from pipeline.core.crops import face_box_in_crop
from pipeline.core.errors import nothing_to_do
from pipeline.core.failures import batch_or_each, failure_detail
from pipeline.core.files import prepare_output_dir, remove_unlisted_files, write_listed_file
from pipeline.core.files import sha256_bytes as sha256_of
from pipeline.core.images import MAX_PIXELS, ImageError, encode_jpeg, load_rgb
from pipeline.core.manifest import IMAGE_SUFFIXES, read_rows, reject, to_posix, write_rows
from pipeline.core.parallel import parallel_map, resolve_workers
from pipeline.core.report import StageReport
from pipeline.core.rows import GeneratedRow, Kind, Reason, Rejected, Split, SplitRow, train_rows
from pipeline.core.seeds import derive_seed

if TYPE_CHECKING:
    from pipeline.components.generators import Generator, Variant
    from pipeline.components.generators.gate import IdentityGate

STAGE = "generate"


@dataclass(frozen=True)
class Planned:
    """One variant to make of one source row, and where it goes."""

    row: SplitRow
    variant: int
    expression: str
    seed: int
    path: str
    backend: str


@dataclass(frozen=True)
class Outcome:
    kept: list[GeneratedRow]
    rejected: list[Rejected]


def run(
    params: GenerateParams, embed: EmbedParams, seed: int, split_manifest: Path, out_dir: Path
) -> StageReport:
    """Read split's train rows, write variants, ``manifest.csv``, ``rejects.csv``.

    ``embed`` configures the identity gate's embedder: the one clean used.
    """
    if params.enabled:
        _backend(params)  # an unknown name fails before anything is read or written
    rows = train_rows(read_rows(split_manifest, SplitRow))
    if params.enabled and not rows:
        raise nothing_to_do(STAGE, f"{split_manifest} has no train rows to make variants of")
    plan = plan_variants(rows, params, seed, out_dir) if params.enabled else []
    with launched_shard(params.enabled) as shard:
        if shard.is_main:
            prepare_output_dir(out_dir)
        shard.barrier()  # no process writes before the folder is ready
        started = time.perf_counter()
        outcomes = shard.gather(_generate(plan, params, embed, shard)) if plan else []
        elapsed = time.perf_counter() - started
        kept = [row for _, o in sorted(outcomes, key=_index) for row in o.kept]
        rejects = [row for _, o in sorted(outcomes, key=_index) for row in o.rejected]
        if shard.is_main:
            _write(out_dir, kept, rejects)
    n_planned = sum(len(variants) for variants in plan)
    extra = _metrics(params, kept, rejects, len(rows))
    speed = round(n_planned / elapsed, 2) if elapsed > 0 and n_planned else 0.0
    runtime = {"seconds": round(elapsed, 2), "variants_per_second": speed}
    return StageReport.from_rows(STAGE, n_planned, kept, rejects, runtime=runtime, **extra)


def plan_variants(
    rows: list[SplitRow], params: GenerateParams, seed: int, out_dir: Path
) -> list[list[Planned]]:
    """Per source row, its ``variants_per_image`` planned variants (expressions cycle)."""
    plan = []
    for row in rows:
        stem = f"{Path(row.path).stem}-{row.sha256[:8]}"
        variants = []
        for k in range(params.variants_per_image):
            expression = params.expressions[k % len(params.expressions)]
            path = out_dir / row.label / f"{stem}_{expression}_{k}.jpg"
            variant_seed = derive_seed(seed, row.sha256, k)
            planned = Planned(row, k, expression, variant_seed, to_posix(path), params.backend)
            variants.append(planned)
        plan.append(variants)
    return plan


# --- generation ---------------------------------------------------------------------


@dataclass
class Worker:
    """What each process builds once: the backend (models load here) and the gate."""

    generator: Generator
    gate: IdentityGate
    quality: int


def build_worker(params: GenerateParams, embed: EmbedParams) -> Worker:
    from pipeline.components.embedders import build_embedder
    from pipeline.components.generators import GENERATORS
    from pipeline.components.generators.gate import IdentityGate

    gate = IdentityGate(build_embedder(embed), params.identity_threshold)
    return Worker(GENERATORS.get(params.backend)(params), gate, params.jpeg_quality)


def _generate(
    plan: list[list[Planned]], params: GenerateParams, embed: EmbedParams, shard: Shard
) -> list[tuple[int, Outcome]]:
    """This process's share of the plan, in chunks; (chunk index, outcome) pairs."""
    backend = _backend(params)
    batch = getattr(params.active, "batch_size", 1)  # images per model call; warp has none
    per_chunk = 1 if backend.cpu_parallel else max(1, -(-batch // len(plan[0])))
    chunks = [(i, plan[s : s + per_chunk]) for i, s in enumerate(range(0, len(plan), per_chunk))]
    mine = shard.take(chunks)
    workers = resolve_workers(getattr(params.active, "workers", 1)) if backend.cpu_parallel else 1
    if workers > 1:
        backend(params)  # bad expressions or a missing model fail here, not in a worker
    setup = partial(build_worker, params, embed)
    results = parallel_map(
        _run_chunk, [c for _, c in mine], workers, STAGE, setup=setup, unit="sources", weight=len,
        spread=backend.cpu_parallel,  # a GPU backend stays on this machine's devices
    )  # fmt: skip
    return [(i, outcome) for (i, _), outcome in zip(mine, results, strict=True)]


def _backend(params: GenerateParams) -> type[Generator]:
    from pipeline.components.generators import GENERATORS

    return GENERATORS.get(params.backend)


def _index(pair: tuple[int, Outcome]) -> int:
    return pair[0]


def _run_chunk(worker: Worker, chunk: list[list[Planned]]) -> Outcome:
    """Make, gate and write the variants of a few sources (runs in a worker)."""
    from pipeline.components.generators import Job

    kept: list[GeneratedRow] = []
    rejected: list[Rejected] = []
    sources: list[tuple[list[Planned], np.ndarray]] = []
    for planned in chunk:
        try:
            sources.append((planned, load_rgb(Path(planned[0].row.path), MAX_PIXELS)))
        except ImageError as err:
            rejected += [_rejected(p, err.reason, err.detail) for p in planned]
    jobs = [
        Job(image, p.expression, p.seed, p.row.sha256)
        for planned, image in sources
        for p in planned
    ]
    variants = iter(_failed_as_variants(batch_or_each(worker.generator.generate, jobs)))
    for planned, image in sources:
        outcome = _gate_and_write(planned, image, [next(variants) for _ in planned], worker)
        kept += outcome.kept
        rejected += outcome.rejected
    return Outcome(kept, rejected)


def _failed_as_variants(results: list[Variant | Exception]) -> list[Variant]:
    """A job the backend raised on by itself becomes a variant with its error: that variant is
    rejected as generation_failed, and the rest of the batch goes on."""
    from pipeline.components.generators import Variant

    return [
        Variant(None, error=failure_detail(r)) if isinstance(r, Exception) else r for r in results
    ]


def _gate_and_write(
    planned: list[Planned], source: np.ndarray, variants: list[Variant], worker: Worker
) -> Outcome:
    """Keep the variants that pass the gate (written as JPEG), reject the others."""
    gate = worker.gate
    box = face_box_in_crop(planned[0].row, source.shape[0]) if planned else None
    made = [v.image for v in variants if v.image is not None]
    distances = iter(gate.distances(source, made, box))
    kept: list[GeneratedRow] = []
    rejected: list[Rejected] = []
    for p, variant in zip(planned, variants, strict=True):
        if variant.image is None:
            rejected.append(_rejected(p, Reason.GENERATION_FAILED, variant.error))
            continue
        distance = float(next(distances))
        if not gate.keeps(distance):
            detail = gate.detail(distance)
            rejected.append(_rejected(p, Reason.IDENTITY_LOST, detail, variant.applied, distance))
            continue
        data = encode_jpeg(variant.image, worker.quality)
        write_listed_file(p.path, data)
        kept.append(_kept(p, variant.applied, distance, sha256_of(data)))
    return Outcome(kept, rejected)


def _kept(p: Planned, applied: dict[str, Any], distance: float, sha256: str) -> GeneratedRow:
    """The variant's row: its source's row (class, face geometry) as a generated image."""
    made = _variant_row(p, applied, distance)
    return replace(made, path=p.path, sha256=sha256, split=Split.TRAIN, parent=p.row.path)


def _rejected(
    p: Planned,
    reason: Reason,
    detail: str,
    applied: dict[str, Any] | None = None,
    distance: float | None = None,
) -> Rejected:
    """The input (source) row, which variant it was, and why: no file is written for it."""
    return reject(_variant_row(p, applied, distance), STAGE, reason, detail)


def _variant_row(
    p: Planned, applied: dict[str, Any] | None, distance: float | None
) -> GeneratedRow:
    return GeneratedRow(
        **vars(p.row), kind=Kind.GENERATED, variant=p.variant, params=applied or {},
        seed=p.seed, backend=p.backend, expression=p.expression,
        identity_distance=None if distance is None else round(distance, 4),
    )  # fmt: skip


# --- outputs ------------------------------------------------------------------------


def _write(out_dir: Path, kept: list[GeneratedRow], rejects: list[Rejected]) -> None:
    remove_unlisted_files(out_dir, {Path(row.path) for row in kept}, IMAGE_SUFFIXES)
    write_rows(out_dir / "rejects.csv", rejects)
    write_rows(out_dir / "manifest.csv", kept, header=GeneratedRow)  # last: complete


def _metrics(
    params: GenerateParams, kept: Sequence[GeneratedRow], rejects: Sequence[Rejected],
    n_sources: int,
) -> dict[str, Any]:  # fmt: skip
    """Per backend and expression: variants made, kept, and their mean identity distance."""
    lost = [r.row for r in rejects if r.reason == Reason.IDENTITY_LOST]
    made: list[GeneratedRow] = [*kept, *lost]  # type: ignore[list-item]
    table: dict[str, dict[str, Any]] = {}
    for expression in params.expressions if params.enabled else []:
        mine = [r for r in made if r.expression == expression]
        finite = [r.identity_distance for r in mine if np.isfinite(r.identity_distance or np.inf)]
        table[expression] = {
            "made": len(mine),
            "kept": sum(r.expression == expression for r in kept),
            "mean_distance": round(float(np.mean(finite)), 4) if finite else None,
        }
    return {
        "enabled": params.enabled,
        "backend": params.backend,
        "sources": n_sources,
        "variants_per_image": params.variants_per_image,
        "identity_threshold": params.identity_threshold,
        "by_backend": {params.backend: table} if params.enabled else {},
    }
