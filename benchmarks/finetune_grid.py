"""Issue 14 item 5: freeze x learning rate x images per class on ORL's 40 x 10 faces.

The original studies' grid: freeze all (linear probe) / about half the trunk's layers / 0 (full
fine-tuning), head learning rate 1e-3 / 1e-4 / 1e-5 (the trunk at ``lr x trunk_lr_factor``,
default 0.01), 1 / 3 / 5 training images per class, dlib_resnet and efficientnet_lite0, 3
seeds: 162 runs through benchmarks/study.py (each one what ``dvc exp run -S ...`` runs).
Cheap, stated settings to fit two shared CPU cores (``BASE``): no augmentation
(``train.source=split``), 10 epochs (2 of them the head warm-up), efficientnet at 112 px (ORL
is 112 x 92 native), one torch thread; ``split.on_short_class=skip`` (see ``BASE``).

Outcomes are saved after every run to ``<work>/outcomes-<backbones>.json`` (``--backbones``
runs a part: one process per backbone shares the work folder); ``--resume`` skips the runs
saved there, so an interrupted grid continues and a partial one still gives a table. Order:
seed by seed, and within a seed efficientnet_lite0 first (ORL does not saturate it;
dlib_resnet's linear probe is already at ~100%), so the first seed's full table comes first.
Per-epoch curves (val acc, train loss) go into each outcome's ``extra`` and every run keeps
``dvclive/`` under ``<work>/runs``.

    nohup nice -n 10 .venv/bin/python benchmarks/finetune_grid.py --work /tmp/grid --resume &
    .venv/bin/python benchmarks/finetune_grid.py --work /tmp/grid --table   # the tables so far
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from study import Outcome, Study, load_outcomes, mean_spread, run_name, save_outcomes

# on_short_class=skip: at 5 per class ORL's look-alike groups leave a class (s19, seed 0)
# no val image without dividing a group; it is left out of that run instead of failing it
BASE = ["train.source=split", "train.epochs=10", "split.on_short_class=skip"]
BACKBONES = {  # backbone -> (its own settings, the middle freeze: about half the trunk's layers)
    "efficientnet_lite0": (["train.image_size=112"], 48),  # 98 layers: blocks 0-7 frozen
    "dlib_resnet": ([], 30),  # 59 layers: conv + blocks 0-6 frozen, blocks 7-13 + fc train
}
LRS = ("0.001", "0.0001", "1e-05")
SHOTS = (1, 3, 5)
COLLAPSE_PTS = 2.0  # flag a run whose final val acc is more than this below its best


def cell_sets(backbone: str, freeze: str, lr: str, shots: int) -> list[str]:
    own, _ = BACKBONES[backbone]
    return [f"train.backbone={backbone}", *own, f"train.freeze={freeze}", f"train.lr={lr}",
            f"split.train_per_class={shots}"]  # fmt: skip


def freezes(backbone: str) -> list[str]:
    return ["all", str(BACKBONES[backbone][1]), "0"]


def grid(seeds: Sequence[int], backbones: Sequence[str]) -> list[tuple[list[str], int]]:
    return [
        (cell_sets(b, f, lr, n), seed)
        for seed in seeds for b in backbones for n in SHOTS for f in freezes(b) for lr in LRS
    ]  # fmt: skip


def curves(live: Path) -> dict[str, list[float]]:
    """Per-epoch validation accuracy and training loss from a run's dvclive folder."""
    out: dict[str, list[float]] = {}
    for key, rel in (("val_acc", "val/acc.tsv"), ("train_loss", "train/loss.tsv")):
        path = live / "plots" / "metrics" / rel
        if path.is_file():
            with path.open(encoding="utf-8") as f:
                column = Path(rel).stem  # dvclive's tsv: step, timestamp, <name>
                out[key] = [float(row[column]) for row in csv.DictReader(f, delimiter="\t")]
    return out


def run_grid(
    work: Path, seeds: Sequence[int], backbones: Sequence[str], resume: bool, more: Sequence[str]
) -> None:
    """The grid's runs for ``backbones``, with the ``more`` settings beside ``BASE``; each process
    saves to its own outcomes file, so two processes (one per backbone) can share ``work``
    and its prepared faces (give them the same ``more``: an outcome does not record it)."""
    torch.set_num_threads(1)
    path = work / f"outcomes-{'-'.join(backbones)}.json"
    mine = load_outcomes(path) if resume and path.is_file() else []
    seen = {(tuple(o.sets), o.seed) for o in all_outcomes(work)} if resume else set()
    study = Study("orl", work, [*BASE, *more])
    todo = [(s, seed) for s, seed in grid(seeds, backbones) if (tuple(s), seed) not in seen]
    for i, (sets, seed) in enumerate(todo, 1):
        name = run_name(sets, seed)
        try:
            outcome = study.run(sets, seed, name=name)
        except Exception as error:  # one failed run must not stop the grid
            print(f"[{i}/{len(todo)}] seed={seed} {' '.join(sets)}: FAILED {error}", flush=True)
            continue
        outcome.extra.update(curves(work / "runs" / name / "dvclive"))
        mine.append(outcome)
        save_outcomes(mine, path)
        print(f"[{i}/{len(todo)}] seed={seed} {' '.join(sets)}: test {outcome.test_acc:.3f} "
              f"val best/final {outcome.best_val_acc}/{outcome.final_val_acc} "
              f"{outcome.seconds:.0f}s", flush=True)  # fmt: skip


def all_outcomes(work: Path) -> list[Outcome]:
    """Every saved outcome under ``work`` (outcomes*.json), one per (settings, seed)."""
    found: dict[tuple[tuple[str, ...], int], Outcome] = {}
    for path in sorted(work.glob("outcomes*.json")):
        for o in load_outcomes(path):
            found[(tuple(o.sets), o.seed)] = o
    return list(found.values())


def _setting(sets: Sequence[str], key: str) -> str:
    return next(s.split("=", 1)[1] for s in sets if s.startswith(key + "="))


def _collapsed(o: Outcome) -> bool:
    if o.best_val_acc is None or o.final_val_acc is None:
        return False
    below_warmup = o.warmup_val_acc is not None and o.final_val_acc < o.warmup_val_acc - 1e-9
    return below_warmup or 100 * (o.best_val_acc - o.final_val_acc) > COLLAPSE_PTS


def table(outcomes: Sequence[Outcome]) -> str:
    """Markdown: test accuracy (mean ± sd over the [n] seeds run) per row and images per class,
    the mean val accuracies (warm-up / best / final), how many runs are flagged (final val acc
    below the warm-up's or more than COLLAPSE_PTS below the best), the embedding baseline. A cell is
    ``dvc exp run -S <BASE> -S <the row's settings> -S split.train_per_class=N -S seed=S``."""
    by: dict[tuple[str, str, str, int], list[Outcome]] = {}
    for o in outcomes:
        key = (
            _setting(o.sets, "train.backbone"),
            _setting(o.sets, "train.freeze"),
            _setting(o.sets, "train.lr"),
            int(_setting(o.sets, "split.train_per_class")),
        )
        by.setdefault(key, []).append(o)  # fmt: skip
    head = " | ".join(f"{n}/class: test (val warm-up/best/final)" for n in SHOTS)
    lines = [f"| backbone | freeze | lr | {head} | the row's `-S` settings |",
             "|---|---|---|" + "---|" * len(SHOTS) + "---|"]  # fmt: skip
    for b in BACKBONES:
        for f in freezes(b):
            for lr in LRS:
                cells = [_cell(by.get((b, f, lr, n), [])) for n in SHOTS]
                sets = " ".join(f"-S {s}" for s in cell_sets(b, f, lr, 0)[:-1])
                lines.append(f"| {b} | {f} | {lr} | {' | '.join(cells)} | `{sets}` |")
    return "\n".join([*lines, _baseline_row(outcomes)])


def _baseline_row(outcomes: Sequence[Outcome]) -> str:
    """The embedding baseline (logistic regression on dlib embeddings of the same split: one
    value per seed and images per class, whichever backbone's run it came with)."""
    cells = []
    for n in SHOTS:
        per_seed = {o.seed: o.baseline_acc for o in outcomes
                    if int(_setting(o.sets, "split.train_per_class")) == n}  # fmt: skip
        cells.append(mean_spread(list(per_seed.values())) if per_seed else "-")
    return f"| embedding baseline (logistic regression) | | | {' | '.join(cells)} | |"


def _cell(runs: Sequence[Outcome]) -> str:
    if not runs:
        return "-"
    val = "/".join(mean_spread([getattr(o, k) for o in runs]).split(" ±")[0]
                   for k in ("warmup_val_acc", "best_val_acc", "final_val_acc"))  # fmt: skip
    flags = sum(_collapsed(o) for o in runs)
    flag = f" **{flags} flagged**" if flags else ""
    return f"{mean_spread([o.test_acc for o in runs])} [{len(runs)}] ({val}){flag}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--backbones", default=",".join(BACKBONES), help="a part of the grid")
    parser.add_argument("--resume", action="store_true", help="skip runs already saved")
    parser.add_argument("--table", action="store_true", help="only print the table so far")
    parser.add_argument("--set", action="append", default=[],
                        help="an extra -S for every run, e.g. train.label_smoothing=0")  # fmt: skip
    args = parser.parse_args()
    if not args.table:
        seeds = [int(s) for s in args.seeds.split(",")]
        run_grid(args.work, seeds, args.backbones.split(","), args.resume, args.set)
    print(table(all_outcomes(args.work)))


if __name__ == "__main__":
    main()
