"""Training speed, measured as ratios in one run (results go to BENCHMARKS.md).

1. Fine-tuning throughput: ``stages.train.run`` (freeze 0, images decoded once into memory)
   against a plain PyTorch loop over the same images: an ImageFolder dataset with the usual
   Resize / ToTensor / Normalize transforms, a shuffling DataLoader, the same model, optimiser,
   batch size and epochs. Images/s = images x epochs / wall time of the whole call (model build,
   decoding, epochs, for the stage also saving), so neither side hides its set-up.
2. Linear probe: ``freeze: all`` with cached features against the same probe recomputing the
   backbone's features every epoch (``cache_features: false``), at 10 epochs.

    .venv/bin/python benchmarks/train.py            # ~2-3 min on 2 CPU cores
    .venv/bin/python benchmarks/train.py --images 4 --epochs 1 --probe-epochs 2   # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.components import optimizers
from pipeline.components.backbones import Backbone, get_backbone
from pipeline.core.config import TrainParams
from pipeline.core.crops import DEFAULT_FACE_FRACTION, centred_box
from pipeline.core.files import sha256_file
from pipeline.core.images import encode_jpeg
from pipeline.core.manifest import write_manifest
from pipeline.core.params import load_params
from stages import train

OUT = Path(__file__).resolve().parent / "out"


def make_images(root: Path, classes: int, per_class: int, size: int) -> Path:
    """ImageFolder of face-crop-sized JPEGs and a manifest listing them (all train rows)."""
    rng = np.random.default_rng(0)
    rows = []
    for c in range(classes):
        for i in range(per_class):
            path = root / "faces" / f"class{c}" / f"{i}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            path.write_bytes(encode_jpeg(pixels, 95))
            rows.append({"path": path.as_posix(), "label": f"class{c}", "split": "train",
                         "sha256": sha256_file(path)})  # fmt: skip
    write_manifest(root / "manifest.csv", rows)
    return root / "manifest.csv"


def stage_seconds(p: TrainParams, manifest: Path, work: Path) -> float:
    start = time.perf_counter()
    train.run(p, 0, manifest, manifest, work / "models", work / "dvclive")
    return time.perf_counter() - start


def plain_loop_seconds(p: TrainParams, folder: Path, n_classes: int, workers: int) -> float:
    """The loop most tutorials write: ImageFolder + DataLoader + the same model."""
    start = time.perf_counter()
    torch.manual_seed(0)
    backbone = get_backbone(p.backbone, p.domain)
    size = p.image_size or backbone.input_size
    model, _ = train.build_model(p, backbone, size, n_classes)
    tf = transforms.Compose([
        *_aligning(backbone), transforms.Resize((size, size)), transforms.ToTensor(),
        transforms.Normalize(backbone.mean, backbone.std),
    ])  # fmt: skip
    loader = DataLoader(datasets.ImageFolder(str(folder), tf), batch_size=p.batch_size,
                        shuffle=True, num_workers=workers)  # fmt: skip
    optimizer = optimizers.make_optimizer(optimizers.param_groups(model, model.head, p), p)
    model.train()
    for _ in range(p.epochs):
        for images, labels in loader:
            loss = torch.nn.functional.cross_entropy(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return time.perf_counter() - start


def _aligning(backbone: Backbone) -> list[Any]:
    """The same face alignment the stage does (dlib's chip for dlib_resnet), so both sides
    feed the network the same input and the comparison is of the loops alone."""
    if backbone.aligner is None:
        return []
    align = backbone.aligner()

    def chip(image: Image.Image) -> Image.Image:
        rgb = np.asarray(image.convert("RGB"))
        return Image.fromarray(align(rgb, centred_box(rgb.shape[0], DEFAULT_FACE_FRACTION)))

    return [transforms.Lambda(chip)]


def params(**train_overrides: Any) -> TrainParams:
    base = {"device": "cpu", "early_stopping_patience": 0, "head_warmup_epochs": 0}
    overrides = {f"train.{k}": v for k, v in {**base, **train_overrides}.items()}
    return load_params(overrides=overrides).train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--classes", type=int, default=8)
    parser.add_argument("--images", type=int, default=8, help="per class")
    parser.add_argument("--size", type=int, default=160, help="face crop size on disk")
    parser.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs")
    parser.add_argument("--probe-epochs", type=int, default=10)
    parser.add_argument("--workers", type=int, default=0, help="plain loop DataLoader workers")
    parser.add_argument("--repeats", type=int, default=2, help="best of this many runs")
    parser.add_argument("--backbone", help="default: params.yaml's train.backbone")
    args = parser.parse_args()
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        manifest = make_images(work, args.classes, args.images, args.size)
        n = args.classes * args.images
        results = run_benchmarks(args, work, manifest, n)
    OUT.mkdir(exist_ok=True)
    (OUT / "train.json").write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)


def run_benchmarks(args: argparse.Namespace, work: Path, manifest: Path, n: int) -> dict:
    """Each measurement ``repeats`` times, interleaved, best kept (noise on shared cores)."""
    chosen = {"backbone": args.backbone} if args.backbone else {}
    tune = params(**chosen, freeze=0, epochs=args.epochs)
    probe = params(**chosen, freeze="all", epochs=args.probe_epochs)
    uncached = params(**chosen, freeze="all", epochs=args.probe_epochs, cache_features=False)
    stage_seconds(params(**chosen, freeze="all", epochs=1), manifest, work)  # warm-up
    times: dict[str, list[float]] = {"plain": [], "stage": [], "cached": [], "uncached": []}
    for _ in range(args.repeats):
        times["plain"].append(plain_loop_seconds(tune, work / "faces", args.classes, args.workers))
        times["stage"].append(stage_seconds(tune, manifest, work))
        times["cached"].append(stage_seconds(probe, manifest, work))
        times["uncached"].append(stage_seconds(uncached, manifest, work))
    plain_s, stage_s, cached_s, uncached_s = (min(times[k]) for k in times)
    images = n * args.epochs
    return {
        "setup": {"images": n, "size_on_disk": args.size,
                  "backbone": get_backbone(tune.backbone, tune.domain).name,
                  "input_size": get_backbone(tune.backbone, tune.domain).input_size,
                  "batch_size": tune.batch_size, "threads": torch.get_num_threads(),
                  "plain_loop_workers": args.workers, "repeats": args.repeats,
                  "torch": torch.__version__},
        "finetune": {"epochs": args.epochs, "plain_images_per_s": images / plain_s,
                     "stage_images_per_s": images / stage_s, "speedup": plain_s / stage_s},
        "probe": {"epochs": args.probe_epochs, "cached_s": cached_s, "recomputed_s": uncached_s,
                  "speedup": uncached_s / cached_s},
    }  # fmt: skip


def print_table(r: dict) -> None:
    s, f, p = r["setup"], r["finetune"], r["probe"]
    print(f"{s['images']} images ({s['size_on_disk']} px on disk) -> {s['backbone']} at "
          f"{s['input_size']} px, batch {s['batch_size']}, {s['threads']} threads, "
          f"torch {s['torch']}")  # fmt: skip
    print("| measurement | baseline | prep train | ratio |")
    print("|---|---:|---:|---:|")
    print(f"| fine-tuning, freeze 0, {f['epochs']} epochs (images/s) | "
          f"{f['plain_images_per_s']:.1f} (plain loop) | {f['stage_images_per_s']:.1f} | "
          f"{f['speedup']:.2f}x |")  # fmt: skip
    print(f"| linear probe, {p['epochs']} epochs (s) | {p['recomputed_s']:.1f} (features "
          f"every epoch) | {p['cached_s']:.1f} (cached) | {p['speedup']:.1f}x |")  # fmt: skip


if __name__ == "__main__":
    main()
