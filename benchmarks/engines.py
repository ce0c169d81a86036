"""The local process pool against Ray on one machine, and an estimate for 100,000 photos.

Real photos: `prep real-faces --with-faults` (dlib 19.5.0's 55 headshots, face_recognition
1.3.0's 8 photos), each copied ``--copies`` times under other names. Every case is the `prep`
command a user runs, in a fresh process, timed as a whole (imports, pool or cluster
connection, model loading, writing and manifests included), best of ``--repeat``:

    augment local   prep augment --factor 8, --workers = the cluster's CPUs
    augment ray     the same with PREP_ENGINE=ray, on a one-node Ray cluster on loopback
                    with that many CPUs (started once, outside the timing)
    detect local    prep detect (one process; torch uses every core)
    detect ray      PREP_ENGINE=ray: one single-threaded detector per CPU

The overhead ratio is ray / local wall time from the same run. For the estimate, from the
same run: the fixed cost of a Ray run (the command on 2 photos), the Ray workers' cost per
photo ((wall - fixed) x CPUs / photos), and the driver's cost per photo (writing that
photo's outputs again with write_listed_file: the driver writes every file, so it is the
serial part). For P photos on N nodes of K cores:

    T(N) ~= fixed + P x max(worker cost / (N x K), driver cost)

It assumes the workers' cost per photo stays what it was here, storage keeps up, and the
driver does nothing else; it is an estimate, not a measurement.

    .venv/bin/python benchmarks/engines.py                 # 4 copies, 2 CPUs, best of 2
    .venv/bin/python benchmarks/engines.py --quick         # 1 copy, one round
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from ray_cluster import Cluster, loopback_cluster  # noqa: E402 (tests/ray_cluster.py)

from demo.real_faces import write_real_faces  # noqa: E402
from pipeline.core.files import write_listed_file  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"
PHOTO_CACHE = REPO / ".cache" / "test-photos"
STAGES = {
    "augment": ["augment", "raw", "--out", "out", "--factor", "8"],
    "detect": ["detect", "raw", "--out", "out"],
}


def make_photos(folder: Path, copies: int) -> int:
    """The real photos, each ``copies`` times under other names; returns the count."""
    every = folder.parent / "every"
    write_real_faces(every, PHOTO_CACHE, with_faults=True)
    count = 0
    for photo in sorted(p for p in every.rglob("*") if p.is_file()):
        for copy in range(copies):
            target = folder / photo.parent.name / f"{photo.stem}_{copy}{photo.suffix}"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(photo, target)
            count += 1
    shutil.rmtree(every)
    return count


def run_prep(work: Path, args: list[str], env: dict[str, str]) -> float:
    """Wall seconds of one `prep` command in a fresh process (the output folder new)."""
    shutil.rmtree(work / "out", ignore_errors=True)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", *args, "--report", "r.json"],
                          cwd=work, env=env, capture_output=True, text=True)  # fmt: skip
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"prep {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return seconds


def driver_cost(folder: Path, photos: int) -> float:
    """Seconds per photo to write that photo's share of ``folder``'s files, as the driver does."""
    files = [(p.relative_to(folder), p.read_bytes()) for p in folder.rglob("*.jpg")]
    with tempfile.TemporaryDirectory(dir=folder.parent) as again:
        started = time.perf_counter()
        for name, data in files:
            write_listed_file(Path(again) / name, data)
        return (time.perf_counter() - started) / photos


def measure(stage: str, work: Path, tiny: Path, cluster: Cluster, cpus: int, repeat: int,
            photos: int) -> dict[str, Any]:  # fmt: skip
    """Local vs Ray wall time, interleaved, best of ``repeat``; and the estimate's inputs."""
    local_env = {**os.environ, "PREP_ENGINE": "local"}
    args = STAGES[stage] + (["--workers", str(cpus)] if stage == "augment" else [])
    local, ray = [], []
    for _ in range(repeat):
        local.append(run_prep(work, args, local_env))
        ray.append(run_prep(work, args, cluster.env()))
    fixed = min(run_prep(tiny, args, cluster.env()) for _ in range(repeat))
    best_local, best_ray = min(local), min(ray)
    return {
        "photos": photos, "local_s": round(best_local, 2), "ray_s": round(best_ray, 2),
        "ray_vs_local": round(best_ray / best_local, 2),
        "ray_fixed_s": round(fixed, 2),
        "worker_s_per_photo": round(max(best_ray - fixed, 0.0) * cpus / photos, 4),
        "driver_s_per_photo": round(driver_cost(work / "out", photos), 5),
    }  # fmt: skip


def estimate(case: dict[str, Any], photos: int, nodes: int, cores: int) -> float:
    """Seconds for ``photos`` on ``nodes`` x ``cores`` (see the module docstring)."""
    per_photo = max(case["worker_s_per_photo"] / (nodes * cores), case["driver_s_per_photo"])
    return case["ray_fixed_s"] + photos * per_photo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--copies", type=int, default=4)
    parser.add_argument("--cpus", type=int, default=2, help="local workers = Ray's CPUs")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--cores-per-node", type=int, default=16, help="for the estimate")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.copies, args.repeat = 1, 1
    with tempfile.TemporaryDirectory(prefix="engines-") as tmp:
        work, tiny = Path(tmp) / "work", Path(tmp) / "tiny"
        photos = make_photos(work / "raw", args.copies)
        for photo in sorted((work / "raw" / "John_Simm").iterdir())[:2]:
            (tiny / "raw" / "John_Simm").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(photo, tiny / "raw" / "John_Simm" / photo.name)
        with loopback_cluster(nodes=1, cpus=args.cpus) as cluster:
            results = {stage: measure(stage, work, tiny, cluster, args.cpus, args.repeat, photos)
                       for stage in STAGES}  # fmt: skip
    for case in results.values():
        case["estimate_100k_s"] = {
            str(n): round(estimate(case, 100_000, n, args.cores_per_node)) for n in (1, 4, 16, 64)
        }
    report = {"cpus": args.cpus, "cores_per_node": args.cores_per_node,
              "load_average": os.getloadavg(), "results": results}  # fmt: skip
    OUT.mkdir(exist_ok=True)
    (OUT / "engines.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
