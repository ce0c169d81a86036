"""Embedding speed: dlib batched vs one crop per call, processes, and the content-hash cache.

Crops are synthetic faces (the sample generator's DCGAN, upscaled and framed the way
detect frames a face: the face box covers ~70% of a 160x160 crop), written as JPEGs.
Cases, all on the same crops in one run:

    one-at-a-time   DlibEmbedder.embed_one_at_a_time: one compute_face_descriptor per crop
    batched         DlibEmbedder.embed on batch_size crops (dlib's list overload), 1 process
    stage, 1 proc   stages.embed.run, cold cache: decode + embed + write, workers=1
    stage, 2 procs  the same with workers=2 (dlib's CPU network is single-threaded)
    stage, cached   stages.embed.run again: every vector comes from the cache, none computed

Throughput is crops/s (best of ``--repeat``); ratios are against one-at-a-time from
the same run; CPU ms per crop (this process and its workers) is the cost that load
from other processes does not distort, so the load average is recorded too. Peak
memory is that of `prep embed` run cold in a fresh process with one worker (each
extra worker process loads its own copy of the model).

    .venv/bin/python benchmarks/embed.py             # 96 crops
    .venv/bin/python benchmarks/embed.py --crops 48 --repeat 1
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from demo.sample_data import LATENT, render_face
from pipeline.components.embedders import DlibEmbedder
from pipeline.core.files import sha256_bytes
from pipeline.core.images import encode_jpeg
from pipeline.core.manifest import write_manifest
from pipeline.core.params import load_params
from stages import embed

OUT = Path(__file__).resolve().parent / "out"


def make_crops(n: int) -> list[np.ndarray]:
    """``n`` 160x160 crops of distinct synthetic faces on plain, varied backgrounds."""
    rng = np.random.default_rng(0)
    crops = []
    for _ in range(n):
        face = cv2.resize(render_face(rng.standard_normal(LATENT)), (114, 114), cv2.INTER_CUBIC)
        crop = np.full((160, 160, 3), rng.integers(40, 220, 3), dtype=np.uint8)
        crop[23:137, 23:137] = face
        crops.append(crop)
    return crops


def write_crops(folder: Path, crops: list[np.ndarray]) -> Path:
    rows = []
    for i, crop in enumerate(crops):
        data = encode_jpeg(crop, 95)
        path = folder / "faces" / "x" / f"{i:04d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        rows.append({"path": str(path), "label": "x", "sha256": sha256_bytes(data)})
    write_manifest(folder / "faces" / "manifest.csv", rows)
    return folder / "faces" / "manifest.csv"


def _cpu() -> float:
    """CPU seconds of this process and of its finished workers."""
    own, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def best_of(repeat: int, fn: Callable[[], Any]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of the fastest of ``repeat`` runs."""
    runs = []
    for _ in range(repeat):
        start, cpu = time.perf_counter(), _cpu()
        fn()
        runs.append((time.perf_counter() - start, _cpu() - cpu))
    return min(runs)


_MEASURE = """
import sys
from pipeline.cli import app
try:
    app(sys.argv[1:])
except SystemExit:
    pass
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(int(hwm.split()[1]) / 1024)
"""


def stage_peak_rss_mb(manifest: Path, folder: Path) -> float:
    """Peak resident memory (VmHWM) of a cold single-process `prep embed` in a fresh
    interpreter; getrusage would also count the memory of the forking parent."""
    args = ["embed", str(manifest), "--out", str(folder / "rss.npz"),
            "--cache", str(folder / "rss.cache.npz"), "--workers", "1"]  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, *args], capture_output=True, text=True, check=True
    )
    return round(float(done.stdout.strip().splitlines()[-1]), 1)


def run(n: int, repeat: int, batch_size: int) -> dict[str, Any]:
    crops = make_crops(n)
    model = DlibEmbedder()
    params = load_params().embed.model_copy(update={"batch_size": batch_size})
    seconds: dict[str, tuple[float, float]] = {}
    seconds["one-at-a-time"] = best_of(repeat, lambda: model.embed_one_at_a_time(crops))
    seconds["batched"] = best_of(
        repeat, lambda: [model.embed(crops[i : i + batch_size]) for i in range(0, n, batch_size)]
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        manifest = write_crops(folder, crops)
        out, cache = folder / "emb.npz", folder / "cache.npz"

        def cold(workers: int) -> Callable[[], Any]:
            return lambda: embed.run(params.model_copy(update={"workers": workers}), manifest, out)

        seconds["stage, 1 proc"] = best_of(repeat, cold(1))
        seconds["stage, 2 procs"] = best_of(repeat, cold(2))
        embed.run(params.model_copy(update={"workers": 2}), manifest, out, cache)
        warm = embed.run(params, manifest, out, cache)
        assert warm.runtime["computed"] == 0, warm.runtime
        seconds["stage, cached"] = best_of(repeat, lambda: embed.run(params, manifest, out, cache))
        peak = stage_peak_rss_mb(manifest, folder)
    base = seconds["one-at-a-time"][0]
    return {
        "crops": n,
        "batch_size": batch_size,
        "cores": len(os.sched_getaffinity(0)),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "cases": {
            name: {
                "crops_per_s": round(n / wall, 1),
                "vs_one_at_a_time": round(base / wall, 2),
                "cpu_ms_per_crop": round(1000 * cpu / n, 1),
            }
            for name, (wall, cpu) in seconds.items()
        },
        "prep_embed_peak_rss_mb": peak,
    }


def table(result: dict[str, Any]) -> str:
    lines = [
        "| case | crops/s | vs one-at-a-time | CPU ms / crop |",
        "|---|---:|---:|---:|",
    ]
    for name, c in result["cases"].items():
        lines.append(
            f"| {name} | {c['crops_per_s']} | {c['vs_one_at_a_time']}x | {c['cpu_ms_per_crop']} |"
        )
    rss = f"{result['prep_embed_peak_rss_mb']} MB"
    lines.append(
        f"\n{result['crops']} crops, batch {result['batch_size']}, {result['cores']} cores, "
        f"load average {result['load_average']}; peak RSS of a cold `prep embed`: {rss}"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--crops", type=int, default=96)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    result = run(args.crops, args.repeat, args.batch_size)
    OUT.mkdir(exist_ok=True)
    (OUT / "embed.json").write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))


if __name__ == "__main__":
    main()
