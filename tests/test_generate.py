"""The generate stage: plan, determinism, the identity gate, manifests, metrics and CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from skimage import data
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.components import landmarks as face_landmarks
from pipeline.components.embedders import build_embedder
from pipeline.components.generators import GENERATORS, warp
from pipeline.components.generators.gate import IdentityGate
from pipeline.core.config import GenerateParams
from pipeline.core.errors import UserError
from pipeline.core.files import sha256_file
from pipeline.core.images import decode_rgb, encode_jpeg
from pipeline.core.manifest import Row, read_manifest, write_manifest
from pipeline.core.params import load_params
from pipeline.core.seeds import derive_seed
from stages import generate

EMBED = load_params().embed  # the identity gate embeds as clean does


def aligned_crop(rgb: np.ndarray, size: int = 160, shift: tuple[int, int] = (0, 0)) -> np.ndarray:
    """The face of ``rgb`` cropped the way detect does: its box plus 20% on each side."""
    points, _ = face_landmarks.find_landmarks(rgb)
    (x0, y0), (x1, y1) = points.min(axis=0), points.max(axis=0)
    side = max(x1 - x0, y1 - y0) * 1.4
    cx, cy = (x0 + x1) / 2 + shift[0], (y0 + y1) / 2 + shift[1]
    top, left = int(cy - side / 2), int(cx - side / 2)
    crop = rgb[max(0, top) : top + int(side), max(0, left) : left + int(side)]
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def astronaut_crops() -> list[np.ndarray]:
    rgb = data.astronaut()
    return [aligned_crop(rgb, shift=s) for s in [(0, 0), (6, -4), (-5, 5)]]


@pytest.fixture(scope="module")
def real_crops(real_photos: dict[str, bytes]) -> dict[str, np.ndarray]:
    """Aligned crops of Obama (two photos) and Biden from face_recognition's test images."""
    return {
        name: aligned_crop(decode_rgb(real_photos[name], 10**8))
        for name in ("obama", "obama2", "biden")
    }


@pytest.fixture
def split_manifest(in_tmp: Path, astronaut_crops: list[np.ndarray]) -> Path:
    """Two training crops of one face and a test crop, as the split stage writes them."""
    rows: list[Row] = []
    for i, (crop, split) in enumerate(
        zip(astronaut_crops, ["train", "train", "test"], strict=True)
    ):
        path = Path(f"faces/astronaut/{i}.jpg")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode_jpeg(crop, 95))
        rows.append({"path": path.as_posix(), "label": "astronaut", "source": f"raw/{i}.jpg",
                     "sha256": sha256_file(path), "split": split})  # fmt: skip
    write_manifest(Path("split/manifest.csv"), rows)
    return Path("split/manifest.csv")


def _params(**extra: Any) -> GenerateParams:
    overrides = {"generate.enabled": True, "generate.backends.warp.workers": 1}
    keys = {"workers": "backends.warp.workers"}  # the warp backend's own section
    return load_params(
        overrides=overrides | {f"generate.{keys.get(k, k)}": v for k, v in extra.items()}
    ).generate


def test_disabled_writes_an_empty_manifest_quickly(split_manifest: Path) -> None:
    stale = Path("gen/astronaut/old.jpg")
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"x")
    write_manifest(Path("gen/manifest.csv"), [])
    started = time.perf_counter()
    report = generate.run(_params(enabled=False), EMBED, 0, split_manifest, Path("gen"))
    assert time.perf_counter() - started < 1.0
    assert read_manifest(Path("gen/manifest.csv")) == []
    header = Path("gen/manifest.csv").read_text().splitlines()[0].split(",")
    assert {"path", "parent", "kind", "backend", "expression", "identity_distance"} <= set(header)
    assert not stale.exists()  # a previous run's variants do not linger
    assert report.to_dict()["enabled"] is False and report.n_in == report.n_kept == 0


def test_warp_variants_are_planned_seeded_and_recorded(split_manifest: Path) -> None:
    report = generate.run(_params(), EMBED, 7, split_manifest, Path("gen"))
    rows = read_manifest(Path("gen/manifest.csv"))
    sources = [r for r in read_manifest(split_manifest) if r["split"] == "train"]
    assert report.n_in == report.n_kept + report.n_rejected == 2 * 3
    assert [r["expression"] for r in rows] == ["smile", "frown", "surprise"] * 2
    for row in rows:
        parent = next(s for s in sources if s["path"] == row["parent"])
        assert row["kind"] == "generated" and row["split"] == "train" and row["backend"] == "warp"
        assert row["seed"] == str(derive_seed(7, parent["sha256"], int(row["variant"])))
        assert row["path"].endswith(
            f"{parent['sha256'][:8]}_{row['expression']}_{row['variant']}.jpg"
        )
        assert sha256_file(Path(row["path"])) == row["sha256"]
        assert 0 < float(row["identity_distance"]) < 0.5 and '"intensity"' in row["params"]
        assert row["source"] == parent["source"]
    table = report.to_dict()["by_backend"]["warp"]
    assert table["smile"]["made"] == table["smile"]["kept"] == 2
    assert 0 < table["surprise"]["mean_distance"] < 0.5


def test_outputs_are_byte_identical_for_any_worker_count(split_manifest: Path) -> None:
    generate.run(_params(workers=1), EMBED, 0, split_manifest, Path("one"))
    generate.run(_params(workers=2), EMBED, 0, split_manifest, Path("two"))
    one, two = read_manifest(Path("one/manifest.csv")), read_manifest(Path("two/manifest.csv"))
    assert [r["sha256"] for r in one] == [r["sha256"] for r in two]
    assert [r["params"] for r in one] == [r["params"] for r in two]


def test_stage_progress_counts_sources(
    split_manifest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    generate.run(_params(workers=1), EMBED, 0, split_manifest, Path("gen"))
    assert "generate: 2/2 sources" in capsys.readouterr().err  # 2 train images, 6 variants


@pytest.mark.slow  # two processes, each loading dlib's models (~15 s on 2 cores)
def test_launched_processes_share_the_work_and_match_one_process(split_manifest: Path) -> None:
    """What several GPUs do, on CPU: torchrun starts 2 processes that split the images."""
    generate.run(_params(), EMBED, 0, split_manifest, Path("one"))
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "pipeline.cli", "generate", str(split_manifest), "--out", "two",
        "--report", "two.json", "--enable", "-s", "backends.warp.workers=1",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("generate: 6 in, 6 kept") == 2  # both processes report the whole
    assert "1/1" in done.stderr  # ...but each made the variants of one image
    one, two = read_manifest(Path("one/manifest.csv")), read_manifest(Path("two/manifest.csv"))
    assert [r["sha256"] for r in one] == [r["sha256"] for r in two]


def test_the_gate_rejects_variants_beyond_the_threshold(split_manifest: Path) -> None:
    report = generate.run(_params(identity_threshold=0.05), EMBED, 0, split_manifest, Path("gen"))
    rejects = read_manifest(Path("gen/rejects.csv"))
    assert report.n_kept == 0 and report.rejected == {"identity_lost": 6}
    assert read_manifest(Path("gen/manifest.csv")) == []
    sources = {r["path"] for r in read_manifest(split_manifest) if r["split"] == "train"}
    assert {r["path"] for r in rejects} == sources  # the input row, once per variant
    for row in rejects:
        assert row["stage"] == "generate" and row["reason"] == "identity_lost"
        assert row["detail"] == f"identity distance {row['identity_distance']} >= threshold 0.05"
    assert [r["expression"] for r in rejects] == ["smile", "frown", "surprise"] * 2
    assert not list(Path("gen").rglob("*.jpg"))  # rejected variants are not written
    table = report.to_dict()["by_backend"]["warp"]
    assert table["frown"] == {"made": 2, "kept": 0, "mean_distance": pytest.approx(0.3, abs=0.2)}


def test_unreadable_source_rejects_its_variants(split_manifest: Path) -> None:
    rows = read_manifest(split_manifest)
    Path(rows[0]["path"]).write_bytes(b"")
    report = generate.run(_params(), EMBED, 0, split_manifest, Path("gen"))
    assert report.rejected == {"unreadable": 3} and report.n_kept == 3


def test_enabled_with_no_train_rows_is_nothing_to_do(split_manifest: Path) -> None:
    rows = [r | {"split": "test"} for r in read_manifest(split_manifest)]
    write_manifest(split_manifest, rows)
    with pytest.raises(UserError, match="generate: nothing to do"):
        generate.run(_params(), EMBED, 0, split_manifest, Path("gen"))
    assert not Path("gen").exists()


def test_a_backend_error_on_one_source_rejects_its_variants_alone(
    split_manifest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = read_manifest(split_manifest)[0]["sha256"]
    original = warp.WarpGenerator.generate

    def fails_on_one_source(self: Any, jobs: Any) -> Any:
        if any(job.key == bad for job in jobs):
            raise RuntimeError("landmarks not found")
        return original(self, jobs)

    monkeypatch.setattr(warp.WarpGenerator, "generate", fails_on_one_source)
    report = generate.run(_params(), EMBED, 0, split_manifest, Path("gen"))
    failed = [r for r in read_manifest(Path("gen/rejects.csv")) if r["sha256"] == bad]
    assert [r["reason"] for r in failed] == ["generation_failed"] * 3
    assert failed[0]["detail"] == "RuntimeError: landmarks not found"
    assert report.n_kept + report.rejected.get("identity_lost", 0) == 3  # the other source's


def test_gate_keeps_a_mild_warp_and_rejects_another_person(
    real_crops: dict[str, np.ndarray],
) -> None:
    gate = IdentityGate(build_embedder(load_params().embed), threshold=0.5)
    obama = real_crops["obama"]
    mild = warp.warp_expression(obama, "smile", 0.6).image
    near, other_photo, other_person = gate.distances(
        obama, [mild, real_crops["obama2"], real_crops["biden"]]
    )
    assert gate.keeps(near) and near < 0.25  # the same photo, a smile added
    assert other_photo < 0.6  # another photo of him: still the same person to dlib
    assert not gate.keeps(other_person) and other_person > 0.6, other_person
    assert gate.detail(other_person).startswith(f"identity distance {other_person:.4f} >= ")


@pytest.mark.slow  # builds the shared sample + detect fixtures when run alone (~20 s)
def test_warp_on_the_sample_dataset_loses_nothing(sample_faces: Any, in_tmp: Path) -> None:
    """Synthetic sample faces (detect's crops): every planned variant is kept or rejected."""
    rows = read_manifest(sample_faces.manifest)
    train = [{**r, "split": "train"} for r in rows if r["face_index"] in ("", "0")][:4]
    write_manifest(Path("split.csv"), train)
    report = generate.run(_params(variants_per_image=2), EMBED, 0, Path("split.csv"), Path("gen"))
    kept, rejects = read_manifest(Path("gen/manifest.csv")), read_manifest(Path("gen/rejects.csv"))
    assert report.n_in == 8 == len(kept) + len(rejects)
    assert all(r["reason"] == "identity_lost" and r["identity_distance"] for r in rejects)
    assert all(float(r["identity_distance"]) < 0.5 for r in kept)
    assert {r["parent"] for r in kept} | {r["path"] for r in rejects} == {r["path"] for r in train}


def test_every_backend_is_listed_in_help_and_list() -> None:
    runner = CliRunner()
    help_text = runner.invoke(app, ["generate", "--help"], terminal_width=100).output
    listed = runner.invoke(app, ["list", "generators"]).output
    for name in GENERATORS.names():
        assert name in help_text and name in listed
    assert set(GENERATORS.names()) == {"warp", "stargan", "instruct-pix2pix", "img2img"}


def test_cli_runs_the_disabled_stage(split_manifest: Path) -> None:
    result = CliRunner().invoke(
        app, ["generate", str(split_manifest), "--out", "gen", "--report", "gen.json"]
    )
    assert result.exit_code == 0, result.output
    assert "generate: 0 in" in result.output and Path("gen/manifest.csv").is_file()
    bad = CliRunner().invoke(
        app, ["generate", str(split_manifest), "--enable", "--backend", "dream", "--out", "g2"]
    )
    assert bad.exit_code == 2 and "unknown generator 'dream'" in bad.output
