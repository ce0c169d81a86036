"""`prep`: every pipeline stage as a command, with or without DVC.

Defaults come from params.yaml; typed flags and ``--set key=value`` override them.
Stage modules are imported inside each command so that ``prep --help`` stays fast.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
import yaml

from pipeline.core.config import Params, default_of, load_params, params_doc, parse_overrides
from pipeline.core.errors import UserError
from pipeline.core.registry import UnknownNameError
from pipeline.core.report import StageReport

app = typer.Typer(
    help=(
        "Few-shot image dataset preparation: detect -> embed -> clean -> split -> "
        "(generate) -> augment -> train -> evaluate.\n\n"
        "Every stage reads and writes CSV manifests under data/ and a summary under "
        "reports/. Run the whole pipeline with `dvc repro`, or any stage on its own."
    ),
    no_args_is_help=True,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
    add_completion=False,
)

F = TypeVar("F", bound=Callable[..., Any])

ParamsOpt = Annotated[
    Path | None,
    typer.Option("--params", help="params.yaml to use (default: ./params.yaml over the defaults)"),
]


def set_option(example: str) -> Any:
    """``--set/-s``, with an example from the stage's own params section."""
    text = f"Override a param (repeatable): -s {example}, or -s section.key=value"
    return Annotated[list[str] | None, typer.Option("--set", "-s", help=text)]


SetOpt = set_option("seed=1")
ReportOpt = Annotated[
    Path | None,
    typer.Option(
        help="Where to write the stage summary JSON (a DVC metric); run times and speed go to "
        "runtime/ beside it"
    ),
]
DEFAULT_AUG = Path("data/augmented")


def flag(section: str, key: str, text: str) -> str:
    """A typed flag's help, ending with its default as params.yaml sets it."""
    default = default_of(section, key)
    return f"{text} [params.yaml: {default}]" if default else text


def params_epilog(section: str) -> str:
    """Every key of the stage's params section, its default and params.yaml's comment."""
    rows = "\n".join(
        f"| {k.key} | {_cell(k.default) or '(a mapping)'} | {_cell(k.comment)} |"
        for k in params_doc().get(section, [])
    )
    return (
        f"**params.yaml `{section}`**, each one overridable here with `-s key=value` "
        f"(or under DVC with `dvc exp run -S {section}.key=value`):\n\n"
        f"| key | default | what it does |\n|---|---|---|\n{rows}"
    )


def _cell(text: str) -> str:
    return text.replace("|", "/").replace("`", "")


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


def refuse_dvc_outputs(*paths: Path | None) -> None:
    """Outside ``dvc repro``, never write into what a stage of ./dvc.yaml owns.

    Written by hand, a DVC output makes ``dvc status`` report its stage (and everything
    after it) as changed and ``dvc checkout`` need --force. DVC sets DVC_STAGE for the
    commands it runs, so those pass.
    """
    if os.environ.get("DVC_STAGE") or not Path("dvc.yaml").is_file():
        return
    owned = dvc_outputs(Path("dvc.yaml"))
    for path in (p for p in paths if p is not None):
        target = path.resolve()
        for out, stage in owned.items():
            if target == out or out in target.parents:
                raise UserError(
                    f"{path} is an output of the DVC stage {stage!r} (dvc.yaml): written by hand, "
                    f"DVC would see {stage!r} and the stages after it as changed. Run "
                    f"`dvc repro {stage}` (or `dvc exp run -S {stage}.<key>=<value>` to try a "
                    "setting), or write elsewhere with --out / --report"
                )


def dvc_outputs(dvc_yaml: Path) -> dict[Path, str]:
    """Every output path declared in a dvc.yaml (resolved), with the stage that writes it."""
    try:
        stages = (yaml.safe_load(dvc_yaml.read_text(encoding="utf-8")) or {}).get("stages", {})
    except (OSError, yaml.YAMLError):
        return {}
    owned: dict[Path, str] = {}
    for name, stage in stages.items():
        for entry in stage.get("outs", []) if isinstance(stage, dict) else []:
            path = entry if isinstance(entry, str) else next(iter(entry))
            owned[(dvc_yaml.parent / path).resolve()] = name
    return owned


def finish(report: StageReport, report_path: Path | None, runtime: Path | None = None) -> None:
    """Write the metrics (and runtime figures beside them, or to ``runtime``); print both."""
    if report_path is not None:
        report.write(report_path, runtime)
    elif runtime is not None:
        report.write_runtime(runtime)
    typer.echo(report.summary())


@app.command("sample-data", epilog=params_epilog("sample_data"))
@user_errors
def sample_data(
    out: Annotated[Path, typer.Argument(help="Folder to create, e.g. data/raw")] = Path("data/raw"),
    classes: Annotated[
        int | None, typer.Option(help=flag("sample_data", "classes", "Synthetic identities"))
    ] = None,
    per_class: Annotated[
        int | None, typer.Option(help=flag("sample_data", "per_class", "Clean photos per identity"))
    ] = None,
    seed: Annotated[int | None, typer.Option(help=flag("", "seed", "Seed"))] = None,
    truth: Annotated[
        Path | None, typer.Option(help="Ground-truth JSON (default: <out>_truth.json beside out)")
    ] = None,
    params: ParamsOpt = None,
    set_: set_option("classes=4") = None,
) -> None:
    """Write a small, deliberately dirty face dataset (synthetic DCGAN identities).

    Each class is one latent vector plus small jitter, pasted onto varied backgrounds,
    with injected faults (duplicates, blur, no face, two faces, a face of another
    class, corrupt and odd files) listed in a ground-truth JSON.
    """
    from demo import sample_data as stage

    p = stage_params("sample_data", params, set_, classes=classes, per_class=per_class, seed=seed)
    truth = truth or out.parent / f"{out.name}_truth.json"
    report = stage.run(p.sample_data, p.seed, out, truth)
    faults = ", ".join(f"{kind} {n}" for kind, n in sorted(report.extra["faults"].items()))
    typer.echo(
        f"wrote {report.extra['files']} files to {out}: {report.extra['clean_photos']} clean "
        f"photos and injected faults ({faults}); ground truth in {truth}"
    )


@app.command("real-faces")
@user_errors
def real_faces(
    out: Annotated[Path, typer.Argument(help="Folder to create, e.g. data/raw")] = Path("data/raw"),
    with_faults: Annotated[
        bool, typer.Option(help="Add a Barack_Obama class with real faults (see below)")
    ] = False,
    cache: Annotated[Path, typer.Option(help="Where the fetched tarballs are kept")] = Path(
        ".cache/test-photos"
    ),
    truth: Annotated[
        Path | None, typer.Option(help="Ground-truth JSON (default: <out>_truth.json beside out)")
    ] = None,
) -> None:
    """Write real face photos from PyPI packages: judge the pipeline on real faces.

    dlib 19.5.0's source tarball ships 5 people x 11 aligned headshots (4 of them
    duplicates, listed in the truth file). --with-faults adds face_recognition 1.3.0's
    Obama photos: a PNG copy, two crops with the face cut off, a crop of one photo,
    and Biden as the wrong person. The tarballs are fetched once with pip (PyPI only).
    """
    from demo.real_faces import write_real_faces, write_truth

    truth = truth or out.parent / f"{out.name}_truth.json"
    ground_truth = write_real_faces(out, cache, with_faults)
    write_truth(truth, ground_truth)
    classes = sorted({e["label"] for e in ground_truth["files"]})
    typer.echo(
        f"wrote {len(ground_truth['files'])} real photos of {len(classes)} people to {out}; "
        f"ground truth in {truth}"
    )


@app.command(epilog=params_epilog("detect"))
@user_errors
def detect(
    raw: Annotated[Path, typer.Argument(help="ImageFolder: raw/<class>/<photos>")] = Path(
        "data/raw"
    ),
    out: Annotated[Path, typer.Option(help="Crops + manifest.csv + rejects.csv")] = Path(
        "data/faces"
    ),
    min_prob: Annotated[
        float | None, typer.Option(help=flag("detect", "min_prob", "Minimum face probability"))
    ] = None,
    multi_face: Annotated[
        str | None,
        typer.Option(
            help=flag("detect", "multi_face", "largest / all / reject: photos with several faces")
        ),
    ] = None,
    device: Annotated[
        str | None, typer.Option(help=flag("detect", "device", "auto | cpu | cuda | cuda:N | mps"))
    ] = None,
    report: ReportOpt = Path("reports/detect.json"),
    params: ParamsOpt = None,
    set_: set_option("min_prob=0.95") = None,
) -> None:
    """Find faces (MTCNN), align them on the eye line and crop them to size x size.

    Every raw file ends in data/faces/manifest.csv or rejects.csv with a reason:
    unreadable, too_large, no_face, multiple_faces, low_prob, too_small.
    """
    from stages import detect as stage

    refuse_dvc_outputs(out, report)
    p = stage_params(
        "detect", params, set_, min_prob=min_prob, multi_face=multi_face, device=device
    )
    finish(stage.run(p.detect, raw, out), report)


@app.command(epilog=params_epilog("embed"))
@user_errors
def embed(
    faces: Annotated[Path, typer.Argument(help="Manifest from detect")] = Path(
        "data/faces/manifest.csv"
    ),
    out: Annotated[Path, typer.Option(help="Embeddings of these crops (.npz)")] = Path(
        "data/embeddings.npz"
    ),
    cache: Annotated[
        Path, typer.Option(help="Vectors by crop sha256, kept across runs (.npz)")
    ] = Path("data/embed_cache.npz"),
    embedder: Annotated[
        str | None, typer.Option(help=flag("embed", "embedder", "`prep list embedders`"))
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(help=flag("embed", "workers", "Processes (dlib); 0 = one per core")),
    ] = None,
    report: ReportOpt = Path("reports/embed.json"),
    params: ParamsOpt = None,
    set_: set_option("num_jitters=1") = None,
) -> None:
    """Embed every face crop (dlib ResNet by default), reusing cached vectors by content hash.

    clean uses the vectors to find the wrong person in a class and the same face under
    two names; baseline classifies with them.
    """
    from stages import embed as stage

    refuse_dvc_outputs(out, cache, report)
    p = stage_params("embed", params, set_, embedder=embedder, workers=workers)
    result = stage.run(p.embed, faces, out, cache)
    finish(result, report)
    typer.echo(f"{result.runtime['computed']} computed, {result.runtime['cached']} from the cache")


@app.command(epilog=params_epilog("clean"))
@user_errors
def clean(
    faces: Annotated[Path, typer.Argument(help="Manifest from detect")] = Path(
        "data/faces/manifest.csv"
    ),
    out: Annotated[Path, typer.Option(help="manifest.csv + rejects.csv (no image copies)")] = Path(
        "data/clean"
    ),
    embeddings: Annotated[
        Path, typer.Option(help="Vectors from `prep embed` for the identity checks")
    ] = Path("data/embeddings.npz"),
    identity: Annotated[
        bool,
        typer.Option(help="Identity checks and embedding groups (--no-identity: pixels only)"),
    ] = True,
    report: ReportOpt = Path("reports/clean.json"),
    params: ParamsOpt = None,
    set_: set_option("blur_relative=0.2") = None,
) -> None:
    """Drop duplicates, blurry or tiny faces, wrong people, label conflicts, small classes.

    Checks run in order and each reject gets the most specific reason; look-alikes that
    survive share a group, which split keeps on one side.
    """
    from stages import clean as stage

    refuse_dvc_outputs(out, report)
    p = stage_params("clean", params, set_)
    finish(stage.run(p.clean, faces, out, embeddings if identity else None), report)


@app.command(epilog=params_epilog("split"))
@user_errors
def split(
    clean_manifest: Annotated[Path, typer.Argument(help="Manifest from clean")] = Path(
        "data/clean/manifest.csv"
    ),
    out: Annotated[Path, typer.Option(help="manifest.csv with a split column")] = Path(
        "data/split"
    ),
    train_per_class: Annotated[
        int | None, typer.Option(help=flag("split", "train_per_class", "Train images per class"))
    ] = None,
    train_fraction: Annotated[
        float | None, typer.Option(help=flag("split", "train_fraction", "...or a fraction of each"))
    ] = None,
    val_per_class: Annotated[
        int | None, typer.Option(help=flag("split", "val_per_class", "Validation images per class"))
    ] = None,
    seed: Annotated[int | None, typer.Option(help=flag("", "seed", "Seed"))] = None,
    report: ReportOpt = Path("reports/split.json"),
    params: ParamsOpt = None,
    set_: set_option("val_per_class=2") = None,
) -> None:
    """Assign train / val / test per class, stratified and seeded; the rest is test."""
    from stages import split as stage

    refuse_dvc_outputs(out, report)
    if train_per_class is not None and train_fraction is not None:
        raise UserError("give --train-per-class or --train-fraction, not both")
    sets = list(set_ or [])
    if train_per_class is not None:  # a count given on the command line replaces the fraction
        sets.append("train_fraction=null")
    if train_fraction is not None:
        sets.append("train_per_class=null")
    p = stage_params(
        "split", params, sets, train_per_class=train_per_class, train_fraction=train_fraction,
        val_per_class=val_per_class, seed=seed,
    )  # fmt: skip
    finish(stage.run(p.split, p.seed, clean_manifest, out), report)


@app.command(epilog=params_epilog("baseline"))
@user_errors
def baseline(
    split_manifest: Annotated[Path, typer.Argument(help="Manifest from split")] = Path(
        "data/split/manifest.csv"
    ),
    embeddings: Annotated[Path, typer.Option(help="Vectors from `prep embed`")] = Path(
        "data/embeddings.npz"
    ),
    report: ReportOpt = Path("reports/baseline.json"),
    params: ParamsOpt = None,
    set_: set_option("logreg_c=0.5") = None,
) -> None:
    """Embedding baselines: nearest class centre (weight imprinting) and logistic regression.

    Fitted on the train rows' embeddings, scored on the test rows: the bar a fine-tuned
    model must clear.
    """
    from stages import baseline as stage

    refuse_dvc_outputs(report)
    p = stage_params("baseline", params, set_)
    result = stage.run(p.baseline, split_manifest, embeddings)
    finish(result, report)
    for method in stage.METHODS:
        m = result.extra[method]
        typer.echo(f"{method:<20} accuracy {m['accuracy']:.1%}  macro-F1 {m['macro_f1']:.3f}")


@app.command(epilog=params_epilog("generate"))
@user_errors
def generate(
    split_manifest: Annotated[
        Path, typer.Argument(help="Manifest whose train rows get variants")
    ] = Path("data/split/manifest.csv"),
    out: Annotated[Path, typer.Option(help="Variants + manifest.csv + rejects.csv")] = Path(
        "data/generated"
    ),
    enabled: Annotated[
        bool | None,
        typer.Option("--enable/--disable", help=flag("generate", "enabled", "Run the stage")),
    ] = None,
    backend: Annotated[
        str | None,
        typer.Option(
            help=flag("generate", "backend", "warp / stargan / instruct-pix2pix / img2img")
        ),
    ] = None,
    expressions: Annotated[
        str | None,
        typer.Option(help=flag("generate", "expressions", "Comma-separated, e.g. smile,frown")),
    ] = None,
    variants: Annotated[
        int | None,
        typer.Option(help=flag("generate", "variants_per_image", "Variants per training image")),
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option(help=flag("generate", "identity_threshold", "Identity distance limit")),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(help=flag("generate", "model", "Diffusion: hub id or local folder")),
    ] = None,
    checkpoint: Annotated[
        str | None,
        typer.Option(help=flag("generate", "checkpoint", "StarGAN generator checkpoint")),
    ] = None,
    device: Annotated[
        str | None,
        typer.Option(help=flag("generate", "device", "auto | cpu | cuda | cuda:N | mps")),
    ] = None,
    seed: Annotated[int | None, typer.Option(help=flag("", "seed", "Seed"))] = None,
    report: ReportOpt = Path("reports/generate.json"),
    params: ParamsOpt = None,
    set_: set_option("variants_per_image=2") = None,
) -> None:
    """Make expression variants of each training image; keep the same person.

    Backends (`prep list generators`; their params are in the table below):

    - **warp**: dlib's 68 landmarks moved, thin-plate-spline warp; CPU, no model
      (warp_strength, warp_jitter, workers)
    - **stargan**: the StarGAN generator from a checkpoint file, e.g. RaFD's
      (checkpoint, stargan_domains, stargan_size)
    - **instruct-pix2pix**: diffusers' InstructPix2Pix, an instruction per expression
      (model, instructions, steps, guidance_scale, image_guidance_scale)
    - **img2img**: diffusers' image-to-image (SDEdit), a prompt per expression
      (model, prompt, phrases, strength, steps, guidance_scale)

    Diffusion: dtype, batch_size, diffusion_size, attention_slicing, vae_tiling,
    cpu_offload. Several GPUs: `accelerate launch --multi_gpu --num_processes N -m
    pipeline.cli generate ...` (or torchrun).

    Each variant is embedded and kept only below identity_threshold; the others go to
    rejects.csv as identity_lost, with the distance. Disabled (the default), it writes
    an empty manifest.
    """

    from stages import generate as stage

    refuse_dvc_outputs(out, report)
    listed = [e.strip() for e in expressions.split(",") if e.strip()] if expressions else None
    p = stage_params(
        "generate", params, set_, enabled=enabled, backend=backend, expressions=listed,
        variants_per_image=variants, identity_threshold=threshold, model=model,
        checkpoint=checkpoint, device=device, seed=seed,
    )  # fmt: skip
    finish(stage.run(p.generate, p.seed, split_manifest, out), report)


@app.command(epilog=params_epilog("augment"))
@user_errors
def augment(
    source: Annotated[
        Path,
        typer.Argument(help="A manifest (train rows are used) or any ImageFolder, e.g. data/raw"),
    ] = Path("data/split/manifest.csv"),
    out: Annotated[
        Path | None,
        typer.Option(
            help="Output ImageFolder + manifest.csv (default: data/augmented for a manifest, "
            "<folder>_augmented beside an ImageFolder)"
        ),
    ] = None,
    factor: Annotated[
        int | None,
        typer.Option(help=flag("augment", "factor", "Images per source, original included")),
    ] = None,
    recipe: Annotated[
        str | None,
        typer.Option(
            help=flag("augment", "recipe", "`prep list recipes` or an albumentations YAML")
        ),
    ] = None,
    keep_original: Annotated[
        bool | None, typer.Option("--keep-original/--no-keep-original", help="Variant 0 = source")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help=flag("augment", "workers", "Processes; 0 = one per core"))
    ] = None,
    seed: Annotated[int | None, typer.Option(help=flag("", "seed", "Seed"))] = None,
    generated: Annotated[
        Path | None, typer.Option(help="Manifest of generated variants to expand too")
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="Plan and count, write nothing")] = False,
    report: ReportOpt = None,
    params: ParamsOpt = None,
    set_: set_option("factor=4") = None,
) -> None:
    """Expand each training image N times with classic transforms (albumentations).

    Outputs are byte-identical for any worker count: each output's seed comes from
    (seed, source sha256, variant index), and its applied parameters are stored
    in the manifest's `params` column. `prep augment --factor 8 data/raw` works on any
    ImageFolder, without DVC, and writes data/raw_augmented/.
    """
    from stages import augment as stage

    if out is None:  # an ImageFolder is a standalone run: never into the pipeline's folder
        folder = source.suffix.lower() != ".csv"
        out = source.with_name(f"{source.name}_augmented") if folder else DEFAULT_AUG
    if not dry_run:
        refuse_dvc_outputs(out, report)
    p = stage_params(
        "augment", params, set_, factor=factor, recipe=recipe, keep_original=keep_original,
        workers=workers, seed=seed,
    )  # fmt: skip
    result = stage.run(p.augment, p.seed, source, out, generated=generated, dry_run=dry_run)
    finish(result, None if dry_run else report)


@app.command()
@user_errors
def show(
    manifest: Annotated[
        Path | None,
        typer.Argument(
            help="An augment manifest (default data/augmented/manifest.csv), or with "
            "--rejects a rejects.csv (default data/clean/rejects.csv)"
        ),
    ] = None,
    rejects: Annotated[
        bool, typer.Option("--rejects", help="Audit sheet of rejected images, by reason")
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option(help="PNG to write (default reports/augment_sheet.png or rejects_sheet.png)"),
    ] = None,
    sources: Annotated[int, typer.Option(help="How many source images (rows)")] = 8,
    per_reason: Annotated[int, typer.Option(help="--rejects: at most this many per reason")] = 24,
    thumb: Annotated[int, typer.Option(help="Thumbnail size in pixels")] = 96,
) -> None:
    """Write a contact sheet: one row per source image, its variants beside it.

    With --rejects: every rejected image grouped by reason, with its class and the
    image it conflicts with (kept duplicate, same face in another class, look-alike).
    """
    from pipeline.cli.contact_sheet import augment_sheet, rejects_sheet

    if rejects:
        out = out or Path("reports/rejects_sheet.png")
        source = manifest or Path("data/clean/rejects.csv")
        counts = rejects_sheet(source, out, thumb=thumb, per_reason=per_reason)
        shown = ", ".join(f"{k} {v}" for k, v in counts.items()) or "none"
        typer.echo(f"wrote {out} (rejects: {shown})")
        return
    out = out or Path("reports/augment_sheet.png")
    augment_sheet(manifest or Path("data/augmented/manifest.csv"), out, sources, thumb)
    typer.echo(f"wrote {out}")


@app.command("list")
@user_errors
def list_components(
    kind: Annotated[
        str, typer.Argument(help="recipes | detectors | backbones | generators | embedders")
    ] = "recipes",
) -> None:
    """List registered components by name, with one line of help each."""
    registries = _registries()
    if kind not in registries:
        raise UserError(f"unknown kind {kind!r}; choose from {', '.join(registries)}")
    for entry in registries[kind]().entries():
        typer.echo(f"{entry.name:<20} {entry.help}")


def _registries() -> dict[str, Callable[[], Any]]:
    def recipes() -> Any:
        from pipeline.components.recipes import RECIPES

        return RECIPES

    def detectors() -> Any:
        from pipeline.components.detectors import DETECTORS

        return DETECTORS

    def backbones() -> Any:
        from pipeline.components.backbones import BACKBONES

        return BACKBONES

    def generators() -> Any:
        from pipeline.components.generators import GENERATORS

        return GENERATORS

    def embedders() -> Any:
        from pipeline.components.embedders import EMBEDDERS

        return EMBEDDERS

    return {
        "recipes": recipes,
        "detectors": detectors,
        "backbones": backbones,
        "generators": generators,
        "embedders": embedders,
    }


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
    experiments: Annotated[
        bool, typer.Option("--experiments", "-e", help="One row per DVC experiment instead")
    ] = False,
    exp_json: Annotated[
        Path | None,
        typer.Option(help="With -e: saved `dvc exp show --json` output (default: run it here)"),
    ] = None,
    width: Annotated[int, typer.Option(help="With -e: the widest line, in characters")] = 100,
) -> None:
    """Print a table of every stage's counts (in, kept, rejected by reason).

    With --experiments: one row per row of `dvc exp show` (workspace, commits,
    experiments), with only the params that differ between them and the
    headline metrics: test acc (metrics/test.json accuracy), baseline
    (reports/baseline.json logistic_regression.accuracy), train imgs
    (dvclive/metrics.json n_train). Run times and speeds are not metrics:
    they are in reports/runtime/.
    """
    if experiments:
        _experiments_summary(exp_json, width)
        return
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


def _experiments_summary(exp_json: Path | None, width: int) -> None:
    from pipeline.cli import efficiency, experiments

    data = json.loads(exp_json.read_text()) if exp_json else efficiency.dvc_exp_show()
    runs = efficiency.exp_show_rows(data)
    if not runs:
        raise UserError("no experiments with metrics yet: run `dvc repro` or `dvc exp run` first")
    typer.echo(experiments.table(runs, width))


def _stage_order(path: Path) -> tuple[int, str]:
    order = [
        "detect", "embed", "clean", "split", "baseline", "generate", "augment", "train",
        "evaluate",
    ]  # fmt: skip
    return (order.index(path.stem) if path.stem in order else len(order), path.stem)


@app.command(epilog=params_epilog("train"))
@user_errors
def train(
    train_manifest: Annotated[
        Path, typer.Argument(help="Training manifest: augment's (all rows) or the split's")
    ] = Path("data/augmented/manifest.csv"),
    split_manifest: Annotated[
        Path, typer.Option("--split", help="Split manifest: val rows; train rows if --source split")
    ] = Path("data/split/manifest.csv"),
    out: Annotated[Path, typer.Option(help="Folder for model.pt + model.json")] = Path("models"),
    live: Annotated[Path, typer.Option(help="DVCLive folder: curves + summary")] = Path("dvclive"),
    backbone: Annotated[
        str | None, typer.Option(help=flag("train", "backbone", "`prep backbones` lists them"))
    ] = None,
    freeze: Annotated[
        str | None,
        typer.Option(help=flag("train", "freeze", "all / 0 / N leading layers / a fraction")),
    ] = None,
    source: Annotated[
        str | None,
        typer.Option(help=flag("train", "source", "augmented / split (no augmentation)")),
    ] = None,
    epochs: Annotated[
        int | None, typer.Option(help=flag("train", "epochs", "Maximum epochs"))
    ] = None,
    lr: Annotated[float | None, typer.Option(help=flag("train", "lr", "Learning rate"))] = None,
    device: Annotated[
        str | None, typer.Option(help=flag("train", "device", "auto | cpu | cuda | cuda:N | mps"))
    ] = None,
    seed: Annotated[int | None, typer.Option(help=flag("", "seed", "Seed"))] = None,
    report: ReportOpt = None,
    runtime: Annotated[
        Path, typer.Option(help="Where wall time, images/s and device go (not a DVC metric)")
    ] = Path("reports/runtime/train.json"),
    params: ParamsOpt = None,
    set_: set_option("lr=0.0003") = None,
) -> None:
    """Fine-tune a backbone with a new head; keep the best validation epoch.

    With freeze all (the default) the backbone's features are computed once per image and
    only the head trains: seconds on a CPU. Curves and summary metrics go to DVCLive; what
    the run took (it differs every run) to --runtime.
    """
    from stages import train as stage

    refuse_dvc_outputs(out, live, report)
    typed_freeze = parse_overrides([f"freeze={freeze}"])["freeze"] if freeze else None
    p = stage_params(
        "train", params, set_, backbone=backbone, freeze=typed_freeze, source=source,
        epochs=epochs, lr=lr, device=device, seed=seed,
    )  # fmt: skip
    result = stage.run(p.train, p.seed, train_manifest, split_manifest, out, live)
    finish(result, report, runtime)
    m = result.extra
    typer.echo(
        f"best val acc {m.get('best_val_acc', float('nan')):.3f} at epoch {m['best_epoch']} "
        f"(rise epoch {m.get('rise_epoch', '-')}), {result.runtime['images_per_s']} images/s; "
        f"model in {out}/"
    )


@app.command(epilog=params_epilog("evaluate"))
@user_errors
def evaluate(
    model_dir: Annotated[Path, typer.Argument(help="Folder written by `prep train`")] = Path(
        "models"
    ),
    split_manifest: Annotated[
        Path, typer.Option("--split", help="Split manifest: its test rows are scored")
    ] = Path("data/split/manifest.csv"),
    out: Annotated[Path, typer.Option(help="test.json, predictions.csv, mistakes.png")] = Path(
        "metrics"
    ),
    device: Annotated[
        str | None,
        typer.Option(help=flag("evaluate", "device", "auto | cpu | cuda | cuda:N | mps")),
    ] = None,
    report: ReportOpt = None,
    params: ParamsOpt = None,
    set_: set_option("top_k=5") = None,
) -> None:
    """Score the model on the test rows: accuracy, macro-F1, top-k, per class, worst mistakes."""
    from stages import evaluate as stage

    refuse_dvc_outputs(out, report)
    p = stage_params("evaluate", params, set_, device=device)
    result = stage.run(p.evaluate, model_dir, split_manifest, out)
    finish(result, report)
    m = result.extra
    topk = next((f"{k} {v:.1%}" for k, v in m.items() if k.startswith("top")), "")
    typer.echo(
        f"test accuracy {m['accuracy']:.1%} on {m['n_test']} images "
        f"(macro-F1 {m['macro_f1']:.3f}, {topk.replace('_', ' ')}); details in {out}/"
    )


@app.command("report")
@user_errors
def efficiency_report(
    exp_json: Annotated[
        Path | None,
        typer.Option(help="Saved `dvc exp show --json` output (default: run it here)"),
    ] = None,
    out: Annotated[Path, typer.Option(help="Writes OUT.md, OUT.csv, OUT.png")] = Path(
        "reports/efficiency"
    ),
    metric: Annotated[str, typer.Option(help="file:key of the metric")] = (
        "metrics/test.json:accuracy"
    ),
    group_by: Annotated[
        list[str] | None,
        typer.Option(help="Param defining a setting (repeatable; default: factor, recipe, source)"),
    ] = None,
    include_commits: Annotated[
        bool, typer.Option(help="Count commits as runs too, not only experiments")
    ] = False,
) -> None:
    """Data-efficiency table and plot from DVC experiments: accuracy vs images per class.

    One line per augmentation setting; repeats (e.g. seeds) give mean ± std; each line is
    fitted with acc = a * ln(x) + b and its R^2.
    """
    from pipeline.cli import efficiency

    data = json.loads(exp_json.read_text()) if exp_json else efficiency.dvc_exp_show()
    runs = efficiency.runs_from_exp_show(data, include_commits)
    if not runs:
        raise UserError(
            "no experiments with metrics: run a sweep first, e.g. `dvc exp run --queue "
            "-S 'split.train_per_class=range(1,6)'` then `dvc queue start`"
        )
    groups = tuple(group_by) if group_by else efficiency.DEFAULT_GROUP_BY
    typer.echo(efficiency.write_report(runs, out, metric, groups))
    typer.echo(f"{len(runs)} experiment(s); wrote {out}.md, {out}.csv, {out}.png")


@app.command("plots")
@user_errors
def plots(
    out: Annotated[Path, typer.Option(help="Folder for the PNG files")] = Path("reports/plots"),
    html: Annotated[
        bool, typer.Option(help="Also write OUT/index.html: DVC's interactive page, offline")
    ] = False,
) -> None:
    """Draw every plot dvc.yaml declares as PNG files, offline.

    `dvc plots show` writes a page that loads Vega from the internet, so
    offline it stays blank. This draws the same charts, from `dvc plots
    show --json`, with a bundled Vega (vl-convert). Run it in the project
    root; it writes to --out (default reports/plots/):

    - `dvclive_plots_metrics_train_loss.png` (and `_train_acc`, `_val_loss`,
      `_val_acc`, `_lr`): train, per epoch (x: step = epoch - 1)
    - `metrics_predictions.png`: evaluate, the test confusion matrix
    - `metrics_mistakes.png`: evaluate, the worst mistakes (a copy)

    Nothing trained yet: run `dvc repro` first. A plot whose file is
    missing is named on stderr; the others are still drawn.
    """
    from pipeline.cli.plots import write_plots

    outcome = write_plots(out, html)
    for item in outcome.written:
        typer.echo(f"wrote {item.path}  ({item.source})")
    for problem in outcome.missing:
        typer.secho(f"not drawn: {problem}; run `dvc repro`", fg=typer.colors.YELLOW, err=True)


@app.command("backbones")
@user_errors
def list_backbones(
    layers: Annotated[
        str | None, typer.Option(help="Print this backbone's numbered layers (what freeze counts)")
    ] = None,
) -> None:
    """List backbones: whether their weights are available here, input size, layer count."""
    from pipeline.components.backbones import BACKBONES, get_backbone, layer_names, weights_status

    if layers:
        for index, (name, kind) in enumerate(layer_names(get_backbone(layers))):
            typer.echo(f"{index:>4}  {kind:<24} {name}")
        return
    meaning = {
        "bundled": "yes (in a package)",
        "cached": "yes (cached)",
        "none": "n/a (scratch)",
        "download": "no: downloads online, or set train.weights",
        "missing": "no",
    }
    typer.echo(f"{'name':<20} {'size':>4} {'layers':>6}  {'weights here':<42} about")
    for entry in BACKBONES.entries():
        backbone = get_backbone(entry.name)
        status = meaning[weights_status(backbone)]
        n_layers = len(layer_names(backbone))
        typer.echo(
            f"{entry.name:<20} {backbone.input_size:>4} {n_layers:>6}  {status:<42} {entry.help}"
        )
