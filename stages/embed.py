"""embed: one face embedding per crop, cached by the crop's content hash.

Reads detect's manifest and writes ``out`` (an ``.npz``: crop sha256 -> vector, exactly
the crops of this manifest) for clean and the baseline. Vectors are looked up first in
``cache``, a second ``.npz`` that only grows and survives reruns (DVC ``persist``), so
a crop already embedded by the same embedder (same ``fingerprint``) is never computed
again: rerunning detect with other params, or editing code under pipeline/, costs only
the crops that actually changed. Changing a clean param does not rerun this stage at all.

Crops that cannot be decoded are counted (reason ``unreadable``) and left out; clean
rejects them with the same reason.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.components.embedders import (
    Embedder,
    Embeddings,
    build_embedder,
    load_embeddings,
    save_embeddings,
)
from pipeline.core.config import EmbedParams
from pipeline.core.crops import face_box_in_crop
from pipeline.core.engines import current_engine
from pipeline.core.errors import nothing_to_do
from pipeline.core.failures import batch_or_each, failure_detail
from pipeline.core.images import MAX_PIXELS, ImageError, load_rgb
from pipeline.core.manifest import read_rows, reject
from pipeline.core.parallel import parallel_map, resolve_workers
from pipeline.core.report import StageReport
from pipeline.core.rows import FaceRow, Reason

STAGE = "embed"


def run(
    params: EmbedParams, faces_manifest: Path, out: Path, cache: Path | None = None
) -> StageReport:
    """Embed every crop of ``faces_manifest`` into ``out``, reusing ``cache`` when it fits."""
    rows = read_rows(faces_manifest, FaceRow)
    if not rows:
        raise nothing_to_do(STAGE, f"{faces_manifest} lists no faces")
    started = time.perf_counter()
    embedder = build_embedder(params)
    cached = read_cache(cache, embedder.fingerprint)
    todo = _unique_misses(rows, cached)
    computed, failed = compute(params, embedder, todo)
    vectors = {**cached.vectors, **computed}
    current = {r.sha256: vectors[r.sha256] for r in rows if r.sha256 in vectors}
    save_embeddings(out, Embeddings(embedder.fingerprint, current))
    if cache is not None and computed:
        save_embeddings(cache, Embeddings(embedder.fingerprint, vectors))
    kept = [r for r in rows if r.sha256 in current]
    rejects = [reject(r, STAGE, *failed[r.sha256]) for r in rows if r.sha256 in failed]
    return StageReport.from_rows(
        STAGE, len(rows), kept, rejects,
        embedder=embedder.name, dim=embedder.dim, crops=len({r.sha256 for r in rows}),
        # what the cache held depends on earlier runs, not on this run's data: runtime
        runtime={"computed": len(computed), "cached": len(current) - len(computed),
                 "seconds": round(time.perf_counter() - started, 2)},
    )  # fmt: skip


def read_cache(cache: Path | None, fingerprint: str) -> Embeddings:
    """The cache's vectors if they come from the same embedder; otherwise none."""
    if cache is None or not cache.is_file():
        return Embeddings(fingerprint, {})
    stored = load_embeddings(cache)
    if stored.fingerprint != fingerprint:
        return Embeddings(fingerprint, {})  # another model or options: nothing reusable
    return stored


def _unique_misses(rows: list[FaceRow], cached: Embeddings) -> list[FaceRow]:
    """Rows of crops not in the cache, each content once, in manifest order."""
    todo: dict[str, FaceRow] = {}
    for row in rows:
        if cached.get(row.sha256) is None:
            todo.setdefault(row.sha256, row)
    return list(todo.values())


def compute(
    params: EmbedParams, embedder: Embedder, todo: list[FaceRow]
) -> tuple[dict[str, np.ndarray], dict[str, tuple[Reason, str]]]:
    """Vectors for ``todo`` in batches, one process per core when the embedder gains from it."""
    workers = resolve_workers(params.workers) if embedder.multiprocess else 1
    size = params.batch_size
    if workers > 1:  # several batches per worker, so no core idles at the end
        size = max(1, min(size, math.ceil(len(todo) / (4 * workers))))
    batches = [todo[i : i + size] for i in range(0, len(todo), size)]
    vectors: dict[str, np.ndarray] = {}
    failed: dict[str, tuple[Reason, str]] = {}
    spread = str(getattr(embedder, "device", "cpu")) == "cpu"  # a GPU embedder stays here
    here = workers == 1 and not (spread and current_engine() == "ray")
    # one process here: the embedder already built; more, or Ray's: each builds its own, once
    setup = (lambda: embedder) if here else partial(build_embedder, params)
    results = parallel_map(
        _embed_batch, batches, workers, "embed", setup=setup, chunksize=1, unit="crops",
        weight=len, spread=spread,
    )  # fmt: skip
    for batch_vectors, batch_failed in results:
        vectors.update(batch_vectors)
        failed.update(batch_failed)
    return vectors, failed


def _embed_batch(
    embedder: Embedder, batch: Sequence[FaceRow]
) -> tuple[dict[str, np.ndarray], dict[str, tuple[Reason, str]]]:
    pairs, shas, failed = [], [], {}
    for row in batch:
        try:
            crop = load_rgb(Path(row.path), MAX_PIXELS)
        except ImageError as err:
            failed[row.sha256] = (err.reason, err.detail)
            continue
        pairs.append((crop, face_box_in_crop(row, crop.shape[0])))  # detect may move the face
        shas.append(row.sha256)
    vectors: dict[str, np.ndarray] = {}
    results = batch_or_each(partial(_embed_pairs, embedder), pairs)
    for sha, vector in zip(shas, results, strict=True):
        if isinstance(vector, Exception):
            failed[sha] = (Reason.PROCESSING_FAILED, failure_detail(vector))
        else:
            vectors[sha] = vector
    return vectors, failed


def _embed_pairs(embedder: Embedder, pairs: Sequence[tuple[np.ndarray, Any]]) -> list[np.ndarray]:
    return list(embedder.embed([crop for crop, _ in pairs], [box for _, box in pairs]))
