"""Fine-tuned backbones against the embedding baseline, on real and on synthetic faces.

The README's table comes from this script. Per dataset, detect -> embed -> clean run once;
then, per images per class and seed: split -> baseline -> augment -> train -> evaluate, with
params.yaml's defaults except the backbone. Datasets:

- ``real``: dlib 19.5.0's 5 x 11 real headshots (``prep real-faces``; needs the tarball in
  .cache/test-photos, which ``make test`` fetches);
- ``sample``: the synthetic sample (``prep sample-data``, 8 x 12, seed 0).

    .venv/bin/python benchmarks/face_backbones.py                       # ~5 min on 2 cores
    .venv/bin/python benchmarks/face_backbones.py --datasets real --seeds 0 --out table.md
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from demo.real_faces import write_real_faces  # noqa: E402
from pipeline.components.detectors import torch_threads  # noqa: E402
from pipeline.core.config import Params  # noqa: E402
from pipeline.core.params import load_params  # noqa: E402
from stages import augment, baseline, clean, detect, embed, evaluate, sample_data, split, train  # noqa: E402

BACKBONES = ("dlib_resnet", "efficientnet_lite0")
BASELINES = ("logistic_regression", "nearest_centre")


def prepare(dataset: str, params: Params) -> Path:
    """Raw photos -> detect -> embed -> clean in the working directory: clean's manifest."""
    raw = Path("raw")
    if dataset == "real":
        write_real_faces(raw, REPO / ".cache" / "test-photos")
    else:
        sample_data.run(params.sample_data, params.seed, raw, Path("raw_truth.json"))
    with torch_threads(1):
        detect.run(params.detect.model_copy(update={"device": "cpu"}), raw, Path("faces"))
    embed.run(params.embed, Path("faces/manifest.csv"), Path("emb.npz"))
    clean.run(params.clean, Path("faces/manifest.csv"), Path("clean"), Path("emb.npz"))
    return Path("clean/manifest.csv")


def one_run(params: Params, manifest: Path, per_class: int, seed: int) -> dict[str, float]:
    """Test accuracy of each baseline and backbone at ``per_class`` training images."""
    split_params = params.split.model_copy(update={"train_per_class": per_class})
    split.run(split_params, seed, manifest, Path("split"))
    scores = baseline.run(params.baseline, Path("split/manifest.csv"), Path("emb.npz")).extra
    result = {name: scores[name]["accuracy"] for name in BASELINES}
    augment.run(params.augment, seed, Path("split/manifest.csv"), Path("augmented"))
    for name in BACKBONES:
        tune = params.train.model_copy(update={"backbone": name})
        train.run(tune, seed, Path("augmented/manifest.csv"), Path("split/manifest.csv"),
                  Path(f"models/{name}"), Path(f"dvclive/{name}"))  # fmt: skip
        evaluate.run(params.evaluate, Path(f"models/{name}"), Path("split/manifest.csv"),
                     Path(f"metrics/{name}"))  # fmt: skip
        result[name] = json.loads(Path(f"metrics/{name}/test.json").read_text())["accuracy"]
    return result


def table(results: dict[tuple[str, int], list[dict[str, float]]]) -> str:
    columns = [*BASELINES, *BACKBONES]
    lines = [
        "| faces | per class | " + " | ".join(columns) + " |",
        "|---|---:|" + "---|" * len(columns),
    ]
    for (dataset, per_class), runs in sorted(results.items()):
        cells = []
        for name in columns:
            values = [100 * run[name] for run in runs]
            spread = f" ± {statistics.stdev(values):.1f}" if len(values) > 1 else ""
            cells.append(f"{statistics.mean(values):.1f}{spread}")
        lines.append(f"| {dataset} | {per_class} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default="real,sample")
    parser.add_argument("--per-class", default="1,3")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    params = load_params()
    results: dict[tuple[str, int], list[dict[str, float]]] = {}
    for dataset in args.datasets.split(","):
        with tempfile.TemporaryDirectory() as work:
            os.chdir(work)
            manifest = prepare(dataset, params)
            for per_class in map(int, args.per_class.split(",")):
                for seed in map(int, args.seeds.split(",")):
                    run = one_run(params, manifest, per_class, seed)
                    print(dataset, per_class, seed, run, flush=True)
                    results.setdefault((dataset, per_class), []).append(run)
            os.chdir(REPO)
    text = table(results)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
