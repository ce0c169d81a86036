"""`prep`: every pipeline stage as a command, with or without DVC.

Defaults come from params.yaml; typed flags and ``--set key=value`` override them.
Stage modules are imported inside each command so that ``prep --help`` stays fast.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from pipeline.config import Params, load_params, parse_overrides
from pipeline.errors import UserError
from pipeline.registry import UnknownNameError
from pipeline.report import StageReport

app = typer.Typer(
    help=(
        "Few-shot image dataset preparation: detect -> clean -> split -> augment.\n\n"
        "Every stage reads and writes CSV manifests under data/ and a summary under "
        "reports/. Run the whole pipeline with `dvc repro`, or any stage on its own."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

F = TypeVar("F", bound=Callable[..., Any])

ParamsOpt = Annotated[
    Path | None,
    typer.Option("--params", help="params.yaml to use (default: ./params.yaml over the defaults)"),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set", "-s", help="Override a param of this stage, e.g. -s min_prob=0.95 (repeatable)"
    ),
]
ReportOpt = Annotated[Path | None, typer.Option(help="Where to write the stage summary JSON")]


def user_errors(command: F) -> F:
    """Print user-fixable errors as one line on stderr and exit 2, instead of a traceback."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (UserError, UnknownNameError, FileNotFoundError) as err:
            typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def stage_params(
    section: str, params_file: Path | None, sets: list[str] | None, **flags: Any
) -> Params:
    """params.yaml, then ``--set`` (scoped to ``section`` unless dotted), then typed flags."""
    overrides = parse_overrides([_scoped(section, item) for item in sets or []])
    for name, value in flags.items():
        if value is not None:
            overrides["seed" if name == "seed" else f"{section}.{name}"] = value
    return load_params(params_file, overrides)


def _scoped(section: str, item: str) -> str:
    key = item.partition("=")[0]
    return item if "." in key or key == "seed" else f"{section}.{item}"


def finish(report: StageReport, report_path: Path | None) -> None:
    if report_path is not None:
        report.write(report_path)
    typer.echo(report.summary())


@app.command("sample-data")
@user_errors
def sample_data(
    out: Annotated[Path, typer.Argument(help="Folder to create, e.g. data/raw")] = Path("data/raw"),
    classes: Annotated[int | None, typer.Option(help="Number of synthetic identities")] = None,
    per_class: Annotated[int | None, typer.Option(help="Clean photos per identity")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed (default: params seed)")] = None,
    truth: Annotated[
        Path | None, typer.Option(help="Ground-truth JSON (default: <out>_truth.json beside out)")
    ] = None,
    params: ParamsOpt = None,
    set_: SetOpt = None,
) -> None:
    """Write a small, deliberately dirty face dataset (synthetic DCGAN identities).

    Each class is one latent vector plus small jitter, pasted onto varied backgrounds,
    with injected faults (duplicates, blur, no face, two faces, a face of another
    class, corrupt and odd files) listed in a ground-truth JSON.
    """
    from stages import sample_data as stage

    p = stage_params("sample_data", params, set_, classes=classes, per_class=per_class, seed=seed)
    truth = truth or out.parent / f"{out.name}_truth.json"
    finish(stage.run(p.sample_data, p.seed, out, truth), None)


@app.command()
@user_errors
def detect(
    raw: Annotated[Path, typer.Argument(help="ImageFolder: raw/<class>/<photos>")] = Path(
        "data/raw"
    ),
    out: Annotated[Path, typer.Option(help="Crops + manifest.csv + rejects.csv")] = Path(
        "data/faces"
    ),
    min_prob: Annotated[float | None, typer.Option(help="Minimum face probability")] = None,
    multi_face: Annotated[
        str | None, typer.Option(help="largest | all | reject: photos with several faces")
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda | cuda:N | mps")] = None,
    report: ReportOpt = Path("reports/detect.json"),
    params: ParamsOpt = None,
    set_: SetOpt = None,
) -> None:
    """Find faces (MTCNN), align them on the eye line and crop them to size x size.

    Every raw file ends in data/faces/manifest.csv or rejects.csv with a reason:
    unreadable, too_large, no_face, multiple_faces, low_prob, too_small.
    """
    from stages import detect as stage

    p = stage_params(
        "detect", params, set_, min_prob=min_prob, multi_face=multi_face, device=device
    )
    finish(stage.run(p.detect, raw, out), report)


@app.command()
@user_errors
def clean(
    faces: Annotated[Path, typer.Argument(help="Manifest from detect")] = Path(
        "data/faces/manifest.csv"
    ),
    out: Annotated[Path, typer.Option(help="manifest.csv + rejects.csv (no image copies)")] = Path(
        "data/clean"
    ),
    report: ReportOpt = Path("reports/clean.json"),
    params: ParamsOpt = None,
    set_: SetOpt = None,
) -> None:
    """Drop exact and near duplicates, blurry and too-small faces, and too-small classes."""
    from stages import clean as stage

    p = stage_params("clean", params, set_)
    finish(stage.run(p.clean, faces, out), report)


@app.command()
@user_errors
def split(
    clean_manifest: Annotated[Path, typer.Argument(help="Manifest from clean")] = Path(
        "data/clean/manifest.csv"
    ),
    out: Annotated[Path, typer.Option(help="manifest.csv with a split column")] = Path(
        "data/split"
    ),
    train_per_class: Annotated[int | None, typer.Option(help="Train images per class")] = None,
    train_fraction: Annotated[float | None, typer.Option(help="...or a fraction of each")] = None,
    val_per_class: Annotated[int | None, typer.Option(help="Validation images per class")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed (default: params seed)")] = None,
    report: ReportOpt = Path("reports/split.json"),
    params: ParamsOpt = None,
    set_: SetOpt = None,
) -> None:
    """Assign train / val / test per class, stratified and seeded; the rest is test."""
    from stages import split as stage

    flags: dict[str, Any] = {"val_per_class": val_per_class, "seed": seed}
    if train_per_class is not None:
        flags |= {"train_per_class": train_per_class, "train_fraction": None}
    if train_fraction is not None:
        flags |= {"train_fraction": train_fraction, "train_per_class": None}
    p = stage_params("split", params, set_, **flags)
    finish(stage.run(p.split, p.seed, clean_manifest, out), report)


@app.command()
@user_errors
def augment(
    source: Annotated[
        Path,
        typer.Argument(help="A manifest (train rows are used) or any ImageFolder, e.g. data/raw"),
    ] = Path("data/split/manifest.csv"),
    out: Annotated[Path, typer.Option(help="Output ImageFolder + manifest.csv")] = Path(
        "data/augmented"
    ),
    factor: Annotated[int | None, typer.Option(help="Images per source, original included")] = None,
    recipe: Annotated[
        str | None, typer.Option(help="Recipe name (`prep list recipes`) or albumentations YAML")
    ] = None,
    keep_original: Annotated[
        bool | None, typer.Option("--keep-original/--no-keep-original", help="Variant 0 = source")
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Processes; 0 = one per core")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed (default: params seed)")] = None,
    generated: Annotated[
        Path | None, typer.Option(help="Manifest of generated variants to expand too")
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="Plan and count, write nothing")] = False,
    report: ReportOpt = None,
    params: ParamsOpt = None,
    set_: SetOpt = None,
) -> None:
    """Expand each training image N times with classic transforms (albumentations).

    Outputs are byte-identical for any worker count: each output's seed comes from
    (seed, source sha256, variant index), and its applied parameters are stored
    in the manifest's `params` column.
    """
    from stages import augment as stage

    p = stage_params(
        "augment", params, set_, factor=factor, recipe=recipe, keep_original=keep_original,
        workers=workers, seed=seed,
    )  # fmt: skip
    result = stage.run(p.augment, p.seed, source, out, generated=generated, dry_run=dry_run)
    finish(result, None if dry_run else report)


@app.command()
@user_errors
def show(
    manifest: Annotated[Path, typer.Argument(help="An augment manifest")] = Path(
        "data/augmented/manifest.csv"
    ),
    out: Annotated[Path, typer.Option(help="PNG to write")] = Path("reports/augment_sheet.png"),
    sources: Annotated[int, typer.Option(help="How many source images (rows)")] = 8,
    thumb: Annotated[int, typer.Option(help="Thumbnail size in pixels")] = 96,
) -> None:
    """Write a contact sheet: one row per source image, its variants beside it."""
    from pipeline.contact_sheet import augment_sheet

    augment_sheet(manifest, out, n_sources=sources, thumb=thumb)
    typer.echo(f"wrote {out}")


@app.command("list")
@user_errors
def list_components(
    kind: Annotated[str, typer.Argument(help="recipes | detectors")] = "recipes",
) -> None:
    """List registered components by name, with one line of help each."""
    registries = _registries()
    if kind not in registries:
        raise UserError(f"unknown kind {kind!r}; choose from {', '.join(registries)}")
    for entry in registries[kind]().entries():
        typer.echo(f"{entry.name:<20} {entry.help}")


def _registries() -> dict[str, Callable[[], Any]]:
    def recipes() -> Any:
        from pipeline.recipes import RECIPES

        return RECIPES

    def detectors() -> Any:
        from pipeline.detectors import DETECTORS

        return DETECTORS

    return {"recipes": recipes, "detectors": detectors}


@app.command("params")
@user_errors
def show_params(params: ParamsOpt = None, set_: SetOpt = None) -> None:
    """Print the effective parameters (defaults, params.yaml, then --set section.key=value)."""
    p = load_params(params, set_ or [])
    typer.echo(json.dumps(p.model_dump(mode="json"), indent=2))


@app.command()
@user_errors
def summary(
    reports: Annotated[Path, typer.Argument(help="Folder of stage reports")] = Path("reports"),
) -> None:
    """Print a table of every stage's counts (in, kept, rejected by reason)."""
    files = sorted(reports.glob("*.json"), key=_stage_order)
    if not files:
        raise UserError(f"no reports in {reports}/: run `dvc repro` or a stage first")
    typer.echo(f"{'stage':<10} {'in':>6} {'kept':>6} {'rejected':>9}  by reason")
    for file in files:
        data = json.loads(file.read_text())
        if "in" not in data:
            continue
        reasons = ", ".join(f"{k}={v}" for k, v in data.get("rejected_by_reason", {}).items())
        typer.echo(
            f"{file.stem:<10} {data['in']:>6} {data['kept']:>6} {data['rejected']:>9}  {reasons}"
        )


def _stage_order(path: Path) -> tuple[int, str]:
    order = ["detect", "embed", "clean", "split", "generate", "augment", "train", "evaluate"]
    return (order.index(path.stem) if path.stem in order else len(order), path.stem)


def main() -> None:  # pragma: no cover - console entry for `python -m pipeline.cli`
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
