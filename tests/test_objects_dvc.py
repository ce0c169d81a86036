"""End to end on objects: `dvc repro` with `domain: objects` on a tiny Fashion-MNIST folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dvc_project import copy_project, init_repo, set_param, sh

from pipeline.core.errors import UserError
from pipeline.core.manifest import read_manifest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
TINY = {
    "split": {"train_per_class": 3, "val_per_class": 1},
    "augment": {"factor": 2, "workers": 1},
    "train": {"epochs": 10, "device": "cpu"},
    "detect": {"device": "cpu"},
    "embed": {"device": "cpu"},
}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The three footwear classes x 8 photos, the whole pipeline run once by DVC."""
    from demo.fashion_mnist import fashion_mnist_dir, write_fashion_mnist

    cache = REPO / ".cache" / "fashion-mnist"
    try:
        fashion_mnist_dir(cache)
    except UserError as err:
        pytest.skip(f"Fashion-MNIST unavailable (Debian dataset-fashion-mnist): {err}")
    root = copy_project(tmp_path_factory.mktemp("objects"), TINY)
    set_param(root / "params.yaml", "domain", "objects")
    write_fashion_mnist(root / "data" / "raw", cache, per_class=8, classes=["footwear"])
    init_repo(root)
    sh("dvc", "repro", cwd=root)
    return root


def test_every_stage_runs_on_objects_with_the_objects_components(project: Path) -> None:
    detect = json.loads((project / "reports/detect.json").read_text())
    assert detect["in"] == detect["kept"] == 24  # whole images: no no_face, nothing lost
    embed = json.loads((project / "reports/embed.json").read_text())
    assert embed["embedder"] == "efficientnet_lite0" and embed["dim"] == 1280
    augment = json.loads((project / "reports/augment.json").read_text())
    assert augment["recipe"] == "keras"
    meta = json.loads((project / "models/model.json").read_text())
    assert meta["backbone"] == "efficientnet_lite0"
    split = read_manifest(project / "data/split/manifest.csv")
    assert sum(r["split"] == "train" for r in split) == 9
    test = json.loads((project / "metrics/test.json").read_text())
    baseline = json.loads((project / "reports/baseline.json").read_text())
    # three kinds of shoe from 3 photos each: far above chance (1/3) for both
    assert test["accuracy"] > 0.6 and baseline["logistic_regression"]["accuracy"] > 0.6
