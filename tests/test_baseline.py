"""The embedding baseline, and the embed cache and baseline metric under `dvc repro`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from dvc_project import copy_project, init_repo, set_params, sh

from pipeline.components.embedders import Embeddings, save_embeddings
from pipeline.core.errors import StageError
from pipeline.core.manifest import Row, write_manifest
from pipeline.core.params import load_params
from stages import baseline


def _split_rows(
    tmp_path: Path, n_train: int, n_test: int, spread: float = 0.3, classes: str = "abcd"
) -> tuple[Path, Path]:
    """Rows of 4 identities (centres ~1 apart in 128-d) with train / val / test splits."""
    rng = np.random.default_rng(0)
    rows: list[Row] = []
    vectors = {}
    for label in classes:
        centre = rng.standard_normal(128) * 0.71 / np.sqrt(128)
        for i, split in enumerate(["train"] * n_train + ["val"] + ["test"] * n_test):
            sha = f"{label}{i:03d}".encode().hex().ljust(64, "0")
            rows.append({"path": f"{label}/{i}.jpg", "label": label, "sha256": sha, "split": split})
            vectors[sha] = centre + spread * rng.standard_normal(128) / np.sqrt(128)
    manifest, emb = tmp_path / "split.csv", tmp_path / "emb.npz"
    write_manifest(manifest, rows)
    save_embeddings(emb, Embeddings("test", vectors))
    return manifest, emb


def test_score_accuracy_and_macro_f1() -> None:
    truth = np.array([0, 0, 1, 1, 2])
    guess = np.array([0, 1, 1, 1, 0])
    # class 0: tp 1 fp 1 fn 1 -> 0.5; class 1: tp 2 fp 1 fn 0 -> 0.8; class 2: 0
    assert baseline.score(truth, guess, 4) == {"accuracy": 0.6, "macro_f1": round(1.3 / 3, 4)}


def test_one_shot_nearest_centre_and_probe_separate_identities(tmp_path: Path) -> None:
    manifest, emb = _split_rows(tmp_path, n_train=1, n_test=6)
    report = baseline.run(load_params().baseline, manifest, emb).to_dict()
    assert (report["n_train"], report["n_test"], report["classes"]) == (4, 24, 4)
    for method in baseline.METHODS:
        assert report[method]["accuracy"] >= 0.9, report
        assert 0.0 <= report[method]["macro_f1"] <= 1.0
    assert report["chance"] == 0.25


def test_noise_gives_chance_level(tmp_path: Path) -> None:
    """Identities buried in noise: the baseline must not look better than it is."""
    manifest, emb = _split_rows(tmp_path, n_train=3, n_test=30, spread=30.0)
    report = baseline.run(load_params().baseline, manifest, emb).to_dict()
    for method in baseline.METHODS:
        assert report[method]["accuracy"] < 0.5, report


def test_euclidean_nearest_centre_without_normalising(tmp_path: Path) -> None:
    manifest, emb = _split_rows(tmp_path, n_train=2, n_test=4)
    params = load_params(overrides={"baseline.normalize": False}).baseline
    assert baseline.run(params, manifest, emb).extra["nearest_centre"]["accuracy"] >= 0.9


def test_missing_embedding_and_missing_test_rows_are_errors(tmp_path: Path) -> None:
    manifest, emb = _split_rows(tmp_path, n_train=2, n_test=0)
    with pytest.raises(StageError, match="no test rows"):
        baseline.run(load_params().baseline, manifest, emb)
    manifest, _ = _split_rows(tmp_path, n_train=2, n_test=2)
    save_embeddings(emb, Embeddings("test", {}))
    with pytest.raises(StageError, match="no embedding"):
        baseline.run(load_params().baseline, manifest, emb)


# ---------------------------------------------------------------- under DVC


@pytest.fixture(scope="module")
def project(sample_raw, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project with the session's sample as data/raw, `dvc repro baseline` done once."""
    split = {"split": {"train_per_class": 2, "val_per_class": 1}}
    root = copy_project(tmp_path_factory.mktemp("dvc_identity"), split)
    shutil.copytree(sample_raw.root, root / "data" / "raw")
    init_repo(root)
    sh("dvc", "repro", "baseline", cwd=root)
    return root


@pytest.mark.slow
def test_baseline_accuracy_is_a_dvc_metric(project: Path) -> None:
    shown = json.loads(sh("dvc", "metrics", "show", "--json", cwd=project))
    files = next(iter(shown.values()))["data"]
    metric = files["reports/baseline.json"]["data"]
    for method in baseline.METHODS:
        assert 0.0 <= metric[method]["accuracy"] <= 1.0
    assert "nearest_centre.accuracy" in sh("dvc", "metrics", "show", cwd=project)


@pytest.mark.slow
def test_a_clean_threshold_change_recomputes_no_embedding(project: Path) -> None:
    embed_report = (project / "reports" / "embed.json").read_text()
    assert json.loads((project / "reports/runtime/embed.json").read_text())["computed"] > 0
    set_params(project / "params.yaml", {"clean": {"wrong_identity_relative": 1.6}})
    stale = set(json.loads(sh("dvc", "status", "--json", cwd=project)))
    assert "clean" in stale and not {"detect", "embed"} & stale  # downstream waits on clean
    log = sh("dvc", "repro", "baseline", cwd=project)
    assert "Running stage 'clean'" in log and "Running stage 'embed'" not in log
    assert (project / "reports" / "embed.json").read_text() == embed_report
    # even when embed itself is forced to rerun, every vector comes from the cache
    sh("dvc", "repro", "--force", "--single-item", "embed", cwd=project)
    rerun = json.loads((project / "reports/runtime/embed.json").read_text())
    crops = json.loads((project / "reports" / "embed.json").read_text())["crops"]
    assert rerun["computed"] == 0 and rerun["cached"] == crops > 0
