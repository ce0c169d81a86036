"""The data-efficiency sweep on the sample data, with DVC experiments, end to end.

In a scratch copy of the project (never this working tree): sample data with ``--per-class``
photos per identity, one ``dvc repro``, then one experiment per (images per class, augmentation
factor, seed), then ``prep report``. Prints the table; the scratch folder keeps
``reports/efficiency.{md,csv,png}`` and the experiments (``dvc exp show``).

    .venv/bin/python benchmarks/efficiency_sweep.py --work /tmp/sweep     # 30 runs
    .venv/bin/python benchmarks/efficiency_sweep.py --work /tmp/s --per-class 12 \\
        --train-per-class 1,2 --factors 1,8 --seeds 0                        # a quick look

Experiments run in the workspace, one after another (`dvc exp run -S ...`). DVC's queue
(`dvc exp run --queue -S 'split.train_per_class=range(1,6)' ...` + `dvc queue start`) runs
each in a temporary git copy, which only holds what git or DVC track: this project's data/raw
is neither, and with ``/data/`` git-ignored DVC does not see a ``data/raw.dvc`` either, so
queued runs fail at detect ("No such file or directory: .../data/raw"). By hand:

    for seed in 0 1 2; do for n in 1 2 3 4 5; do for f in 1 8; do
      dvc exp run -S split.train_per_class=$n -S augment.factor=$f -S seed=$seed
    done; done; done
    prep report                   # reports/efficiency.md / .csv / .png
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COPY = ("dvc.yaml", "params.yaml", ".dvcignore", ".gitignore", "pyproject.toml")


def sh(*args: str, cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "NO_ALBUMENTATIONS_UPDATE": "1", "DVC_NO_ANALYTICS": "1"}  # fmt: skip
    print("$", " ".join(args), flush=True)
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout


def prepare(work: Path, per_class: int) -> None:
    """A git + DVC copy of the project with fresh sample data, reproduced once and committed."""
    if work.exists() and any(work.iterdir()):
        sys.exit(f"{work} is not empty; choose a new --work folder")
    work.mkdir(parents=True, exist_ok=True)
    for name in COPY:
        shutil.copy(REPO / name, work / name)
    for package in ("pipeline", "stages"):
        shutil.copytree(REPO / package, work / package, ignore=shutil.ignore_patterns("__py*"))
    commit = ("git", "-c", "user.name=sweep", "-c", "user.email=sweep@localhost", "commit", "-qm")
    sh("git", "init", "-q", cwd=work)
    sh("dvc", "init", "-q", cwd=work)
    sh("prep", "sample-data", "data/raw", "--per-class", str(per_class), cwd=work)
    sh("git", "add", "-A", cwd=work)
    sh(*commit, "sample data", cwd=work)
    sh("dvc", "repro", "-q", cwd=work)
    sh("git", "add", "-A", cwd=work)
    sh(*commit, "baseline run", cwd=work)


def sweep(work: Path, train_per_class: str, factors: str, seeds: str, extra: list[str]) -> None:
    """One workspace experiment per combination; stages whose inputs did not change are
    skipped, so detect, embed and clean run only once."""
    grid = [(n, f, s) for s in _ints(seeds) for n in _ints(train_per_class) for f in _ints(factors)]
    for i, (n, factor, seed) in enumerate(grid, 1):
        print(f"[{i}/{len(grid)}] train_per_class={n} factor={factor} seed={seed}", flush=True)
        sets = [f"split.train_per_class={n}", f"augment.factor={factor}", f"seed={seed}", *extra]
        sh("dvc", "exp", "run", "-q", *(arg for item in sets for arg in ("-S", item)), cwd=work)


def _ints(spec: str) -> list[int]:
    return [int(part) for part in spec.split(",") if part.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="new scratch folder")
    parser.add_argument("--per-class", type=int, default=30, help="sample photos per identity")
    parser.add_argument("--train-per-class", default="1,2,3,4,5")
    parser.add_argument("--factors", default="1,8")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--set", action="append", default=[], help="extra -S, e.g. train.lr=0.01")
    parser.add_argument("--reuse", action="store_true", help="--work already prepared")
    args = parser.parse_args()
    start = time.perf_counter()
    if not args.reuse:
        prepare(args.work, args.per_class)
    sweep(args.work, args.train_per_class, args.factors, args.seeds, args.set)
    groups = ["augment.factor", "augment.recipe", "train.source"]
    groups += [item.partition("=")[0] for item in args.set]  # extra settings split the lines
    print(sh("prep", "report", *(arg for g in groups for arg in ("--group-by", g)), cwd=args.work))
    print(f"done in {(time.perf_counter() - start) / 60:.1f} min; see {args.work}/reports/")


if __name__ == "__main__":
    main()
