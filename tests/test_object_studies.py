"""benchmarks/object_studies.py: its grids are valid `-S` settings and name what they claim."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pipeline.components.backbones import get_backbone
from pipeline.components.backbones.base import layer_names
from pipeline.core.params import load_params

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
object_studies = pytest.importorskip("object_studies")


def test_every_cell_is_a_valid_set_of_params(tmp_path: Path) -> None:
    """A typo in a study's settings fails here, not after an hour of runs (`--tables` prints
    these settings as the `dvc exp run -S` lines the README shows)."""
    for name, spec in object_studies.specs().items():
        for cell in spec.cells:
            sets = [f"train.weights={tmp_path}" if s == "WEIGHTS" else s for s in cell.sets]
            params = load_params(overrides=[*spec.base, *sets])
            assert params.domain == "objects", name
            assert params.train.source == "split", name  # no augmentation in any study
        if spec.pretrain:
            assert load_params(overrides=spec.pretrain).train.freeze == 0


def test_fine_tuning_the_last_block_freezes_everything_before_it() -> None:
    """freeze 90 must leave exactly EfficientNet-Lite0's last block (and the head conv)."""
    spec = object_studies.specs()["scratch_vs_transfer"]
    fine = next(c for c in spec.cells if "train.freeze=90" in c.sets)
    assert "last block" in fine.row
    layers = [name for name, _ in layer_names(get_backbone("efficientnet_lite0"))]
    last_block = max(int(n.split(".")[1]) for n in layers if n.startswith("_blocks."))
    assert layers[90].startswith(f"_blocks.{last_block}.")
    assert not any(n.startswith(f"_blocks.{last_block}.") for n in layers[:90])


def test_table_pools_seeds_and_reads_partial_results() -> None:
    """A partial run (one seed, some cells) still gives a table with what is there."""
    spec = object_studies.specs()["mixup"]
    cell = spec.cells[0]
    done = [
        object_studies.Outcome(list(cell.sets), seed, acc, 0.5, 0.6, 0.55, 0.3, None, 1.0,
                               {"best_epoch": 4, "epochs_run": 14, "final_train_acc": 1.0})
        for seed, acc in ((0, 0.40), (1, 0.50))
    ]  # fmt: skip
    text = object_studies.table("mixup", spec, done)
    assert "| 10 per class | 45.0 ± 7.1 (n=2) | - (n=0) | - (n=0) | 50.0 ± 0.0 |" in text
    assert "4/14; 4/14" in text
