"""Detect speed: batched MTCNN against one photo per call, measured in one process.

Photos come from the sample generator (mixed sizes: landscape, portrait, square,
0.8x to 1.25x of params.yaml's photo_size), decoded once into memory. Every case
runs MTCNN (facenet-pytorch 2.5.3, params.yaml's max_side) on the same photos
with the same torch thread count:

    one-at-a-time       MtcnnDetector.detect_one per photo: plain facenet MTCNN.detect
    batched             detect_batch on batch_size photos grouped by size, as the stage
                        does (equal-size buckets, at most max_batch per call: 4 on CPU)
    batched-file-order  the same without grouping by size first (smaller buckets)
    batched-16-per-call equal-size buckets of up to 16 photos per MTCNN call
    stage               stages.detect.run on the raw folder: decode, detect, crop, write

The batched cases and one-at-a-time are timed interleaved, chunk by chunk in
rotating order, so load from other processes hits them alike; throughput is
photos/s for the best of ``--repeat`` passes, and ratios are against
one-at-a-time from the same run. The load average is recorded with the results.

    .venv/bin/python benchmarks/detect.py               # ~80 photos, threads 1
    .venv/bin/python benchmarks/detect.py --quick       # ~30 photos, one pass, no stage
    .venv/bin/python benchmarks/detect.py --threads 1,2 --batch-size 32
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from demo import sample_data
from pipeline.components.detectors import Face, MtcnnDetector, torch_threads
from pipeline.core.images import ImageError, load_rgb
from pipeline.core.params import load_params
from stages import detect

OUT = Path(__file__).resolve().parent / "out"
TARGET = 1.5  # batched / one-at-a-time


def make_photos(folder: Path, classes: int, per_class: int) -> tuple[Path, list[np.ndarray]]:
    """Generate a sample dataset and decode every readable photo in it."""
    params = load_params().sample_data.model_copy(
        update={"classes": classes, "per_class": per_class}
    )
    raw = folder / "raw"
    sample_data.run(params, 0, raw, folder / "truth.json")
    photos = []
    for path in sorted(p for p in raw.rglob("*") if p.is_file()):
        try:
            photos.append(load_rgb(path, 10**9))
        except ImageError:
            continue
    return raw, photos


def chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[k : k + size] for k in range(0, len(items), size)]


def max_box_shift(a: list[list[Face]], b: list[list[Face]]) -> float | None:
    """Largest distance (px, max over coordinates) from a face to its nearest match."""
    shift = 0.0
    for faces_a, faces_b in zip(a, b, strict=True):
        if len(faces_a) != len(faces_b):
            return None
        for fa in faces_a:
            nearest = min(float(np.abs(np.subtract(fa.box, fb.box)).max()) for fb in faces_b)
            shift = max(shift, nearest)
    return shift


def detector_cases(
    photos: list[np.ndarray], batch_size: int, max_side: int
) -> dict[str, tuple[Callable[[list[int]], list[list[Face]]], list[list[int]]]]:
    """Case name -> (detect a chunk of photo indices, the chunks it runs in order)."""
    per_call_4 = MtcnnDetector("cpu", max_side)
    per_call_16 = MtcnnDetector("cpu", max_side, max_batch=16)
    files = list(range(len(photos)))
    by_size = sorted(files, key=lambda i: (photos[i].shape, i))

    def single(idx: list[int]) -> list[list[Face]]:
        return [per_call_4.detect_one(photos[i]) for i in idx]

    def batch(detector: MtcnnDetector) -> Callable[[list[int]], list[list[Face]]]:
        return lambda idx: detector.detect_batch([photos[i] for i in idx])

    return {
        "one-at-a-time": (single, chunks(files, batch_size)),
        "batched": (batch(per_call_4), chunks(by_size, batch_size)),
        "batched-file-order": (batch(per_call_4), chunks(files, batch_size)),
        "batched-16-per-call": (batch(per_call_16), chunks(by_size, batch_size)),
    }


def interleaved(
    cases: dict[str, tuple[Callable[[list[int]], list[list[Face]]], list[list[int]]]],
    n_photos: int,
    repeat: int,
) -> tuple[dict[str, float], dict[str, list[list[Face]]]]:
    """Best total seconds per case over ``repeat`` passes, and each case's faces per photo."""
    names = list(cases)
    best = dict.fromkeys(names, float("inf"))
    found: dict[str, list[list[Face]]] = {}
    for _ in range(repeat):
        total = dict.fromkeys(names, 0.0)
        faces: dict[str, list[list[Face] | None]] = {n: [None] * n_photos for n in names}
        for k in range(len(cases[names[0]][1])):
            for name in names[k % len(names) :] + names[: k % len(names)]:
                fn, order = cases[name]
                start = time.perf_counter()
                result = fn(order[k])
                total[name] += time.perf_counter() - start
                for i, f in zip(order[k], result, strict=True):
                    faces[name][i] = f
        best = {n: min(best[n], total[n]) for n in names}
        found = {n: [f or [] for f in faces[n]] for n in names}
    return best, found


def run_cases(
    args: argparse.Namespace, raw: Path, photos: list[np.ndarray], threads: int
) -> list[dict[str, Any]]:
    params = load_params().detect.model_copy(
        update={"device": "cpu", "batch_size": args.batch_size}
    )
    cases = detector_cases(photos, args.batch_size, params.max_side)
    if args.quick:
        cases = {k: v for k, v in cases.items() if k in ("one-at-a-time", "batched")}
    with torch_threads(threads):
        cases["batched"][0](list(range(4)))  # warm-up: first calls allocate, pick kernels
        seconds, found = interleaved(cases, len(photos), args.repeat)
        results = [
            {
                "case": n,
                "seconds": s,
                "box_shift_px": max_box_shift(found["one-at-a-time"], found[n]),
            }
            for n, s in seconds.items()
        ]
        if not args.quick:
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                detect.run(params, raw, Path(tmp) / "faces")
                stage_s = time.perf_counter() - start
            results.append({"case": "stage", "seconds": stage_s, "box_shift_px": None})
    single_s = seconds["one-at-a-time"]
    for case in results:
        case.update(threads=threads, photos=len(photos), batch_size=args.batch_size)
        case["photos_per_s"] = round(len(photos) / case["seconds"], 2)
        case["ratio"] = round(single_s / case["seconds"], 2)
        case["seconds"] = round(case["seconds"], 3)
    return results


def conditions(photos: list[np.ndarray]) -> dict[str, Any]:
    sizes = Counter(f"{p.shape[1]}x{p.shape[0]}" for p in photos)
    return {
        "cpu_count": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "torch": torch.__version__,
        "torch_default_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "photo_sizes": dict(sorted(sizes.items())),
    }


def table(cases: list[dict[str, Any]]) -> str:
    lines = [
        "| case | threads | photos | batch | photos/s | vs one-at-a-time | max box shift px |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in cases:
        shift = "-" if c["box_shift_px"] is None else f"{c['box_shift_px']:.1f}"
        lines.append(
            f"| {c['case']} | {c['threads']} | {c['photos']} | {c['batch_size']} | "
            f"{c['photos_per_s']:.1f} | {c['ratio']:.2f}x | {shift} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="~30 photos, one pass, no stage")
    parser.add_argument("--batch-size", type=int, default=load_params().detect.batch_size)
    parser.add_argument("--threads", default="1", help="torch threads, comma-separated: 1,2")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--out", type=Path, default=OUT / "detect.json")
    args = parser.parse_args()
    if args.quick:
        args.repeat = 1
    classes, per_class = (3, 6) if args.quick else (6, 11)
    with tempfile.TemporaryDirectory() as tmp:
        raw, photos = make_photos(Path(tmp), classes, per_class)
        before = conditions(photos)
        cases = []
        for threads in (int(t) for t in args.threads.split(",")):
            cases += run_cases(args, raw, photos, threads)
    batched = [c["ratio"] for c in cases if c["case"] == "batched"]
    result = {
        "cases": cases,
        "conditions": {**before, "load_average_1m_after": round(os.getloadavg()[0], 2)},
        "target_batched_ratio": TARGET,
        "met": all(r >= TARGET for r in batched),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(cases))
    print(f"\nconditions: {json.dumps(result['conditions'])}\nwrote {args.out}")


if __name__ == "__main__":
    main()
