"""The README's calibration table on real faces: test-row ECE / NLL without and with the
fitted temperature, and the median confidence of right answers (benchmarks/study.py runs).

    nice -n 10 .venv/bin/python benchmarks/calibration.py --work /tmp/calibration

Cases (seed 0, defaults unless named): dlib's 5 x 11 headshots with dlib_resnet at freeze all;
ORL's 40 x 10 at 3 images per class (``train.source=split``) with dlib_resnet and
efficientnet_lite0 at freeze all. ``--freeze0`` adds dlib_resnet at freeze 0 on both (minutes
each on a CPU). The synthetic sample's row is ``make demo``'s ``metrics/test.json`` and
``metrics/predictions.csv``.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from study import Study, run_name

CASES = (  # (dataset, base settings, settings)
    ("headshots", [], ["train.freeze=all"]),
    ("orl", ["train.source=split"], ["train.freeze=all"]),
    ("orl", ["train.source=split"], ["train.backbone=efficientnet_lite0", "train.freeze=all"]),
)
FREEZE0 = (
    ("headshots", [], ["train.freeze=0"]),
    ("orl", ["train.source=split"], ["train.freeze=0"]),
)


def median_right_confidence(predictions: Path) -> float:
    with predictions.open(encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["actual"] == r["predicted"]]
    return statistics.median(float(r["confidence"]) for r in rows) if rows else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--freeze0", action="store_true", help="also the full fine-tunes")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("| photos | settings | test acc | T | ECE | NLL | median confidence, right answers |")
    print("|---|---|---|---|---|---|---|")
    for dataset, base, sets in [*CASES, *(FREEZE0 if args.freeze0 else ())]:
        study = Study(dataset, args.work / dataset, base)
        name = run_name([*base, *sets], 0)
        outcome = study.run(sets, 0, name=name)
        metrics = args.work / dataset / "runs" / name / "metrics"
        t = json.loads((metrics / "test.json").read_text())
        conf = median_right_confidence(metrics / "predictions.csv")
        print(f"| {dataset} | {' '.join([*base, *sets])} | {100 * outcome.test_acc:.1f}% "
              f"({t['n_test']}) | {t['temperature']:.2f} | {t['ece_uncalibrated']:.3f} -> "
              f"{t['ece']:.3f} | {t['nll_uncalibrated']:.3f} -> {t['nll']:.3f} | {conf:.2f} |",
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
