"""The `prep` command line as a user meets it: flags, defaults, outputs DVC owns, errors."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from conftest import REPO
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.core.manifest import Row, read_manifest, write_manifest

runner = CliRunner()


def prep(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env=env)
    return result.exit_code, result.output


def _clean_manifest(path: Path, classes: int = 2, per_class: int = 10) -> Path:
    rows: list[Row] = [
        {"path": f"faces/c{c}/{i}.jpg", "label": f"c{c}", "sha256": f"{c:02d}{i:062d}"}
        for c in range(classes)
        for i in range(per_class)
    ]
    write_manifest(path, rows)
    return path


# ---------------------------------------------------------------- flags


def test_split_train_fraction_flag_replaces_the_count(in_tmp: Path) -> None:
    """params.yaml sets train_per_class; --train-fraction alone must be enough to switch."""
    code, output = prep("split", str(_clean_manifest(Path("clean.csv"))), "--out", "split",
                        "--train-fraction", "0.5", "--report", "split.json")  # fmt: skip
    assert code == 0, output
    rows = read_manifest(Path("split/manifest.csv"))
    for label in ("c0", "c1"):
        assert sum(r["split"] == "train" for r in rows if r["label"] == label) == 5


def test_split_count_flag_replaces_a_fraction_set_elsewhere(in_tmp: Path) -> None:
    code, output = prep("split", str(_clean_manifest(Path("clean.csv"))), "--out", "split",
                        "-s", "train_fraction=0.5", "--train-per-class", "2")  # fmt: skip
    assert code == 0, output
    rows = read_manifest(Path("split/manifest.csv"))
    assert sum(r["split"] == "train" for r in rows) == 4


def test_split_refuses_both_train_flags(in_tmp: Path) -> None:
    code, output = prep("split", str(_clean_manifest(Path("clean.csv"))), "--out", "split",
                        "--train-fraction", "0.5", "--train-per-class", "2")  # fmt: skip
    assert code == 2 and "not both" in output and not Path("split").exists()


# ---------------------------------------------------------------- outputs DVC owns


@pytest.fixture
def project(in_tmp: Path, make_image_folder) -> Path:
    """A folder with the project's dvc.yaml and an ImageFolder at data/raw."""
    shutil.copy(REPO / "dvc.yaml", in_tmp / "dvc.yaml")
    make_image_folder(classes=2, per_class=2, size=48, root=in_tmp / "data" / "raw")
    return in_tmp


def test_standalone_augment_of_a_folder_writes_beside_it_not_into_dvcs_folder(
    project: Path,
) -> None:
    code, output = prep("augment", "--factor", "3", "data/raw", "--workers", "1")
    assert code == 0, output
    rows = read_manifest(Path("data/raw_augmented/manifest.csv"))
    assert len(rows) == 4 * 3 and all(r["path"].startswith("data/raw_augmented/") for r in rows)
    assert not Path("data/augmented").exists()


def test_writing_a_dvc_output_by_hand_is_refused_with_what_to_do(project: Path) -> None:
    code, output = prep("augment", "--factor", "3", "data/raw", "--out", "data/augmented")
    assert code == 2
    assert "output of the DVC stage 'augment'" in output and "dvc repro augment" in output
    assert not Path("data/augmented").exists()  # nothing written
    code, output = prep("detect", "data/raw", "--report", "elsewhere.json")
    assert code == 2 and "'detect'" in output and not Path("data/faces").exists()


def test_dvc_itself_may_write_its_outputs(project: Path) -> None:
    code, output = prep("augment", "--factor", "2", "data/raw", "--out", "data/augmented",
                        "--workers", "1", env={"DVC_STAGE": "augment"})  # fmt: skip
    assert code == 0, output
    assert len(read_manifest(Path("data/augmented/manifest.csv"))) == 4 * 2


# ---------------------------------------------------------------- errors that say what to do


def test_unknown_param_key_suggests_the_close_one(in_tmp: Path) -> None:
    code, output = prep("params", "-s", "augment.factr=4")
    assert code == 2 and "augment.factr: unknown key; did you mean 'factor'?" in output
    code, output = prep("params", "-s", "augmnt.factor=4")
    assert code == 2 and "did you mean 'augment'?" in output


def test_offline_facenet_embedder_points_to_embed_weights(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    def offline(*args: object, **kwargs: object) -> None:
        raise OSError("Name or service not known")

    monkeypatch.setenv("TORCH_HOME", str(in_tmp / "torch"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    _clean_manifest(Path("faces.csv"))
    code, output = prep("embed", "faces.csv", "--embedder", "facenet", "--out", "e.npz",
                        "--cache", "c.npz", "--report", "r.json")  # fmt: skip
    assert code == 2 and "embed.weights" in output and "prep embed -s weights=" in output
    assert "train.weights" not in output


class _Payload:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("this would run on load",))


@pytest.mark.parametrize("kind", ["garbage", "code"])
def test_unsafe_checkpoints_are_refused_without_advice_to_load_them_unsafely(
    tmp_path: Path, kind: str
) -> None:
    import torch

    from pipeline.components.generators.stargan import load_generator
    from pipeline.core.errors import UserError

    checkpoint = tmp_path / "G.ckpt"
    if kind == "garbage":
        checkpoint.write_bytes(b"\x80\x04\x95 not a checkpoint" * 8)
    else:
        torch.save({"main.0.weight": _Payload()}, checkpoint)
    with pytest.raises(UserError) as caught:
        load_generator(checkpoint)
    message = str(caught.value)
    assert "cannot read StarGAN checkpoint" in message and "not plain weights" in message
    assert "weights_only" not in message and "trust" not in message


# ---------------------------------------------------------------- help that teaches

STAGES = {  # command -> its params section
    "sample-data": "sample_data", "detect": "detect", "embed": "embed", "clean": "clean",
    "split": "split", "baseline": "baseline", "generate": "generate", "augment": "augment",
    "train": "train", "evaluate": "evaluate",
}  # fmt: skip


def test_train_help_shows_every_tunable_with_its_default() -> None:
    code, output = prep("train", "--help", env={"COLUMNS": "200"})
    assert code == 0
    for key in ("optimizer", "mixup", "head_warmup_epochs", "head_init", "label_smoothing"):
        assert key in output, key
    # params.yaml when pytest runs in the repo (its params.yaml), the defaults elsewhere
    assert re.search(r"\[(params\.yaml|default): auto\]", output)
    assert re.search(r"\[(params\.yaml|default): 0\.001\]", output)


@pytest.mark.parametrize(("command", "section"), sorted(STAGES.items()))
def test_each_stage_help_lists_its_own_params(command: str, section: str) -> None:
    from pipeline.core.params import params_doc

    code, output = prep(command, "--help", env={"COLUMNS": "200"})
    assert code == 0 and f"params.yaml {section}" in output
    example = output.split("(repeatable): -s ", 1)[1].split("=", 1)[0]  # --set's example key
    assert example in {k.key for k in params_doc()[section]}, (command, example)


def test_params_yaml_documents_every_key_the_models_declare() -> None:
    from pipeline.core.config import DomainSection, Params
    from pipeline.core.params import params_doc

    doc = params_doc()
    copied = set(DomainSection.model_fields)  # the top-level `domain`, copied into sections
    for name, field in Params.model_fields.items():
        declared = set(field.annotation.model_fields) - copied if name in doc else {name}
        documented = {k.key for k in doc.get(name, doc[""])}
        assert declared <= documented, (name, declared - documented)
