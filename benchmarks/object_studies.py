"""The four object studies of issue 15 on Fashion-MNIST, as ``dvc exp run -S`` experiments.

Each study is a grid of ``-S`` settings run by benchmarks/study.py (the stages as plain
functions, exactly the settings ``dvc exp run -S`` would apply) over 3 seeds:

1. ``scratch_vs_transfer``: small_cnn from scratch vs a linear probe on EfficientNet-Lite0
   (freeze all) vs fine-tuning its last block (freeze 90 of its 98 layers:
   ``prep backbones --layers efficientnet_lite0``; layers 90-97 are block 15, the 1x1 head
   conv and its BatchNorm). The source: dogs vs cats, ~80 / ~90 / ~94 %.
2. ``freeze_lr``: freeze 0 / 49 (the middle) / all x lr on the three footwear classes, with
   ``train.trunk_lr_factor=1`` so that lr is every layer's rate, as in the source (MobileNetV2
   on 6 kinds of shoe, lr 1e-4..1e-6; best 50 layers frozen at 1e-4, ~80 %).
3. ``mixup``: none / data (Beta(2, 1), the image's share; the dominant label) / label
   (Beta(1, 1)) at 10, 25, 50 and 100 images per class, small_cnn from scratch as in the
   source (CIFAR-10 from scratch, 500 images: 44.6 / 58.6 / 57.8 %); ``mixup_long``: its 50
   per class trained 60 epochs instead of 20 (mixup is known to need longer training).
4. ``transfer``: small_cnn trained on five classes (t_shirt_top, trouser, pullover, dress,
   coat; 100 each), its trunk loaded by ``train.weights`` for the other five (sandal, shirt,
   sneaker, bag, ankle_boot; new head), fine-tuned whole (``trunk_lr_factor=1``: the trunk
   at the head's rate, as from scratch; and at the default 0.01, where a loaded trunk barely
   moves) or probed, against small_cnn from scratch and EfficientNet-Lite0 from ImageNet.
   The source: CIFAR-10 -> CIFAR-100, +2.7 points over training from scratch.

Every run trains on the split's train rows (``train.source=split``: no augmentation), with
crops of ``detect.size=96``. Outcomes are saved after each run to ``<work>/<study>.json``;
``--resume`` skips the (settings, seed) pairs already there, so an interrupted run still gives
a table. Each run's ``dvclive/`` curves stay under ``<work>/<study>/runs/``. Tables (markdown)
go to ``<work>/<study>.md`` and stdout.

    nice -n 10 .venv/bin/python benchmarks/object_studies.py --resume            # all four
    .venv/bin/python benchmarks/object_studies.py --study mixup --seeds 0 --resume
    .venv/bin/python benchmarks/object_studies.py --tables                       # tables only
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from study import REPO, Outcome, Study, load_outcomes, mean_spread, save_outcomes

from pipeline.core.params import default_params_file

OUT = REPO / "benchmarks" / "out" / "object_studies"
COMMON = ["domain=objects", "detect.size=96", "train.source=split"]
SCRATCH = ["train.backbone=small_cnn", "train.freeze=0", "train.image_size=32"]
IMAGENET = ["train.image_size=96"]  # efficientnet_lite0, the objects default
FIVE_A = "t_shirt_top,trouser,pullover,dress,coat"
FIVE_B = "sandal,shirt,sneaker,bag,ankle_boot"


@dataclass
class Cell:
    """One setting of a study: its place in the table and its ``-S`` settings."""

    row: str
    col: str
    sets: list[str]


@dataclass
class Spec:
    """A study: its dataset, settings shared by every run, cells and a caption."""

    dataset: str
    base: list[str]
    cells: list[Cell]
    caption: str
    pretrain: list[str] = field(default_factory=list)  # transfer: the 5-class run's settings
    pretrain_dataset: str = ""
    folder: str = ""  # another study's folder, to reuse its prepared photos and embeddings


def specs() -> dict[str, Spec]:
    fine = ["train.freeze=90", "train.epochs=15", *IMAGENET]
    # the block at lr 1e-4 (the Keras tutorial's fine-tuning rate), not the default 1e-5
    fine_fast = [*fine, "train.trunk_lr_factor=0.1"]
    grid = [
        Cell(f"freeze {f}", f"lr {lr}", [f"train.freeze={f}", f"train.lr={lr}", *IMAGENET])
        for f in ("0", "49", "all")
        for lr in ("1e-3", "1e-4", "1e-5", "1e-6")
    ]
    mixes = {
        "none": ["train.mixup=none"],
        "data Beta(2,1)": ["train.mixup=data", "train.data_mixup_beta=[2.0,1.0]"],
        "label Beta(1,1)": ["train.mixup=label", "train.mixup_alpha=1.0"],
    }
    mixup = [
        Cell(f"{n} per class", mix, [f"split.train_per_class={n}", *sets])
        for n in (10, 25, 50, 100)
        for mix, sets in mixes.items()
    ]
    transfer = [
        Cell("small_cnn from scratch", "", SCRATCH),
        Cell(
            "small_cnn from the 5-class model, fine-tuned whole",
            "",
            [*SCRATCH, "WEIGHTS", "train.trunk_lr_factor=1"],
        ),
        Cell(
            "small_cnn from the 5-class model, fine-tuned, trunk at lr x 0.01 (default)",
            "",
            [*SCRATCH, "WEIGHTS"],
        ),
        Cell(
            "small_cnn from the 5-class model, linear probe",
            "",
            [*SCRATCH, "WEIGHTS", "train.freeze=all"],
        ),
        Cell("efficientnet_lite0 from ImageNet, linear probe", "", IMAGENET),
    ]
    return {
        "scratch_vs_transfer": Spec(
            "fashion-mnist:60",
            [*COMMON, "split.train_per_class=20", "split.val_per_class=5", "train.epochs=30"],
            [
                Cell("small_cnn from scratch (32 px)", "", SCRATCH),
                Cell("efficientnet_lite0 linear probe (freeze all, 96 px)", "", IMAGENET),
                Cell(
                    "efficientnet_lite0 last block fine-tuned at lr 1e-4 (freeze 90)", "", fine_fast
                ),
                Cell("efficientnet_lite0 last block fine-tuned at lr 1e-5 (default)", "", fine),
            ],
            "all 10 classes, 20 train + 5 val images per class, 35 test images per class "
            "(350); train.epochs=30 (15 for the fine-tuned block: head at lr 1e-3, the block at "
            "lr x trunk_lr_factor), early stopping after 10; efficientnet_lite0 at 96 px, "
            "small_cnn at 32 px",
        ),
        "freeze_lr": Spec(
            "fashion-mnist:60:sandal,sneaker,ankle_boot",
            [
                *COMMON,
                "split.train_per_class=10",
                "split.val_per_class=5",
                "train.epochs=12",
                "train.trunk_lr_factor=1",
            ],
            grid,
            "sandal / sneaker / ankle boot, 10 train + 5 val per class, 45 test per class "
            "(135); efficientnet_lite0 at 96 px, train.epochs=12, trunk_lr_factor=1 (lr is "
            "every layer's rate), head imprinted, Adam, cosine schedule",
        ),
        "mixup": Spec(
            "fashion-mnist:150",
            [*COMMON, *SCRATCH, "split.val_per_class=10", "train.epochs=20"],
            mixup,
            "all 10 classes, small_cnn from scratch at 32 px, 10 val per class, the rest of "
            "150 per class as test (1300 test images at 10 per class, 400 at 100); "
            "train.epochs=20, early stopping after 10",
        ),
        "mixup_long": Spec(
            "fashion-mnist:150",
            [
                *COMMON,
                *SCRATCH,
                "split.val_per_class=10",
                "train.epochs=60",
                "train.early_stopping_patience=0",
            ],
            [
                Cell("50 per class, 60 epochs", mix, ["split.train_per_class=50", *sets])
                for mix, sets in mixes.items()
            ],
            "the mixup study's 50 images per class trained 3x as long: train.epochs=60, no "
            "early stopping (the best validation epoch is still kept)",
            folder="mixup",
        ),
        "transfer": Spec(
            f"fashion-mnist:60:{FIVE_B}",
            [*COMMON, "split.train_per_class=10", "split.val_per_class=5", "train.epochs=30"],
            transfer,
            "target: sandal, shirt, sneaker, bag, ankle boot; 10 train + 5 val per class, 45 "
            "test per class (225); train.epochs=30. The 5-class model: small_cnn from scratch "
            "on t_shirt_top, trouser, pullover, dress, coat, 100 train + 10 val per class, "
            "train.epochs=30, one model per seed",
            pretrain=[
                *COMMON,
                *SCRATCH,
                "split.train_per_class=100",
                "split.val_per_class=10",
                "train.epochs=30",
            ],
            pretrain_dataset=f"fashion-mnist:120:{FIVE_A}",
        ),
    }


def commands(spec: Spec) -> str:
    """The same study as shell lines: the photos, then one ``dvc exp run -S`` per cell and
    seed (in a DVC project of this repository, e.g. a fresh clone). ``dvc exp run -S`` keeps
    a setting for the runs after it, so every key a cell sets is named in every line (its
    default where that cell leaves it)."""
    keys = list(dict.fromkeys(s.split("=")[0] for c in spec.cells for s in c.sets if "=" in s))
    if any("WEIGHTS" in c.sets for c in spec.cells):
        keys.append("train.weights")
    lines = []
    if spec.pretrain:
        lines += ["# the 5-class model, in a project of its own; then copy its models/ folder",
                  "# into the target project as pretrained/five_s$seed/",
                  _photos(spec.pretrain_dataset),
                  f"for seed in 0 1 2; do {_exp(spec.pretrain)}; done", "",
                  "# the target project"]  # fmt: skip
    lines += [_photos(spec.dataset), f"base='{' '.join('-S ' + s for s in spec.base)}'"]
    lines += ["for seed in 0 1 2; do"]
    for cell in spec.cells:
        sets = ["train.weights=pretrained/five_s$seed" if s == "WEIGHTS" else s for s in cell.sets]
        given = {s.split("=")[0]: s for s in sets}
        full = [given.get(key) or f"{key}={_default(key)}" for key in keys]
        lines.append(f"  {_exp(full, '$base ')}")
    return "\n".join([*lines, "done"])


def _photos(dataset: str) -> str:
    _, n, classes = [*dataset.split(":"), ""][:3]
    picked = "".join(f" --classes {c}" for c in classes.split(",") if c)
    return f"prep fashion-mnist data/raw --per-class {n}{picked}"


def _exp(sets: Sequence[str], base: str = "") -> str:
    return f"dvc exp run -S seed=$seed {base}" + " ".join(f'-S "{s}"' for s in sets)


def _default(key: str) -> str:
    """``key``'s shipped default as a ``-S`` value."""
    value: object = yaml.safe_load(default_params_file().read_text(encoding="utf-8"))
    for part in key.split("."):
        value = value[part]  # type: ignore[index]
    return value if isinstance(value, str) else json.dumps(value).replace(" ", "")


def run_name(cell: Cell, seed: int) -> str:
    slug = "".join(c if c.isalnum() else "_" for c in f"{cell.row}_{cell.col}")
    return f"{slug}_s{seed}"


def curves(run: Path) -> dict[str, object]:
    """What the whole training curve says, from the run's dvclive folder."""
    summary = json.loads((run / "dvclive" / "metrics.json").read_text())
    val = _tsv(run / "dvclive" / "plots" / "metrics" / "val" / "acc.tsv")
    return {
        "epochs_run": summary.get("epochs_run"),
        "best_epoch": summary.get("best_epoch"),
        "final_train_acc": summary.get("train", {}).get("acc"),
        "val_acc_curve": val,
    }


def _tsv(path: Path) -> list[float]:
    if not path.is_file():
        return []
    with path.open() as handle:
        return [round(float(row["acc"]), 3) for row in csv.DictReader(handle, delimiter="\t")]


def run_study(name: str, spec: Spec, seeds: Sequence[int], work: Path, resume: bool) -> None:
    path = work / f"{name}.json"
    done = load_outcomes(path) if resume and path.is_file() else []
    if not resume:
        shutil.rmtree(work / name, ignore_errors=True)
        shutil.rmtree(work / f"{name}_pretrain", ignore_errors=True)
    have = {(tuple(o.sets), o.seed) for o in done}
    study = Study(spec.dataset, work / (spec.folder or name), spec.base)
    for seed in seeds:
        weights = ""
        for cell in spec.cells:
            if "WEIGHTS" in cell.sets and not weights:
                weights = pretrained(spec, seed, work / f"{name}_pretrain", done, path)
            sets = [f"train.weights={weights}" if s == "WEIGHTS" else s for s in cell.sets]
            key = [s if not s.startswith("train.weights=") else "train.weights=<5-class>"
                   for s in sets]  # fmt: skip
            if (tuple(key), seed) in have:
                continue
            outcome = study.run(sets, seed, name=run_name(cell, seed))
            outcome.sets = key
            outcome.extra |= curves(Path(outcome.extra["run"]))
            done.append(outcome)
            save_outcomes(done, path)
            print(f"[{name}] {cell.row} {cell.col} seed {seed}: test {outcome.test_acc:.3f} "
                  f"({outcome.seconds:.0f} s)", flush=True)  # fmt: skip


def pretrained(spec: Spec, seed: int, work: Path, done: list[Outcome], path: Path) -> str:
    """The 5-class model's folder for ``seed`` (trained once, kept for --resume)."""
    models = work / "runs" / f"five_classes_s{seed}" / "models"
    if not (models / "model.pt").is_file():
        study = Study(spec.pretrain_dataset, work, [])
        outcome = study.run(spec.pretrain, seed, name=f"five_classes_s{seed}", keep_models=True)
        outcome.sets = ["PRETRAIN", *spec.pretrain]
        outcome.extra |= curves(Path(outcome.extra["run"]))
        done.append(outcome)
        save_outcomes(done, path)
        print(f"[pretrain] seed {seed}: 5-class test {outcome.test_acc:.3f} "
              f"({outcome.seconds:.0f} s)", flush=True)  # fmt: skip
    return str(models)


def table(name: str, spec: Spec, outcomes: Sequence[Outcome]) -> str:
    """Markdown: test accuracy (mean ± std over seeds) per cell, then what the curves say."""
    by_key: dict[tuple[str, ...], list[Outcome]] = {}
    for o in outcomes:
        by_key.setdefault(tuple(o.sets), []).append(o)

    def found(cell: Cell) -> list[Outcome]:
        key = tuple("train.weights=<5-class>" if s == "WEIGHTS" else s for s in cell.sets)
        return by_key.get(key, [])

    cols = list(dict.fromkeys(c.col for c in spec.cells))
    rows = list(dict.fromkeys(c.row for c in spec.cells))
    cell_at = {(c.row, c.col): c for c in spec.cells}
    head = [name, *(cols if cols != [""] else ["test accuracy %"]), "embedding baseline %"]
    lines = [f"Settings: `{' '.join('-S ' + s for s in spec.base)}`; {spec.caption}.", "",
             "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]  # fmt: skip
    for row in rows:
        runs = [found(cell_at[(row, col)]) for col in cols if (row, col) in cell_at]
        accs = [mean_spread([o.test_acc for o in r]) + f" (n={len(r)})" for r in runs]
        base = mean_spread([o.baseline_acc for r in runs for o in r])
        lines.append("| " + " | ".join([row, *accs, base]) + " |")
    lines += ["", "| cell | best val % | final val % | final train % | best epoch / run | s |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for cell in spec.cells:
        runs = found(cell)
        if not runs:
            continue
        epochs = "; ".join(f"{o.extra.get('best_epoch')}/{o.extra.get('epochs_run')}" for o in runs)
        lines.append(
            f"| {cell.row} {cell.col} | {mean_spread([o.best_val_acc for o in runs])} | "
            f"{mean_spread([o.final_val_acc for o in runs])} | "
            f"{mean_spread([o.extra.get('final_train_acc') for o in runs])} | {epochs} | "
            f"{sum(o.seconds for o in runs) / len(runs):.0f} |"
        )
    pre = [o for o in outcomes if o.sets and o.sets[0] == "PRETRAIN"]
    if pre:
        lines += ["", f"The 5-class models: test accuracy {mean_spread([o.test_acc for o in pre])}"
                  f" % over {len(pre)} seed(s) on their own five classes."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", choices=[*specs(), "all"], default="all")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--work", type=Path, default=OUT)
    parser.add_argument("--resume", action="store_true", help="skip runs already saved")
    parser.add_argument("--tables", action="store_true", help="only print the tables")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (busy machines)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    chosen = specs() if args.study == "all" else {args.study: specs()[args.study]}
    for name, spec in chosen.items():
        if not args.tables:
            run_study(name, spec, args.seeds, args.work, args.resume)
        path = args.work / f"{name}.json"
        text = table(name, spec, load_outcomes(path) if path.is_file() else [])
        text += f"\n```bash\n{commands(spec)}\n```\n"
        (args.work / f"{name}.md").write_text(text, encoding="utf-8")
        print(f"\n## {name}\n\n{text}", flush=True)


if __name__ == "__main__":
    main()
