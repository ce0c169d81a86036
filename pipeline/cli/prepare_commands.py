"""`prep detect`, `embed`, `clean`, `split`: from raw photos to a clean, split face set.

Each command runs one stage module with params.yaml's section, overridden by its flags.
"""

from __future__ import annotations

from pathlib import Path

import typer

from pipeline.cli import options as opt
from pipeline.cli.running import (
    finish,
    refuse_dvc_outputs,
    require_inputs,
    stage_params,
    use_engine,
    user_errors,
)
from pipeline.core.errors import UserError

FacesArg = opt.argument(Path, "Manifest from detect")
DETECT = opt.Section("detect")
EMBED = opt.Section("embed")
SPLIT = opt.Section("split")


@user_errors
def detect(
    raw: opt.argument(Path, "ImageFolder: raw/<class>/<photos>") = Path("data/raw"),
    out: opt.option(Path, "Crops + manifest.csv + rejects.csv") = Path("data/faces"),
    min_prob: DETECT.flag(float, "min_prob", "Minimum face probability") = None,
    multi_face: DETECT.flag(
        str, "multi_face", "largest / all / reject: photos with several faces"
    ) = None,
    device: DETECT.device() = None,
    engine: opt.EngineOpt = None,
    report: opt.ReportOpt = Path("reports/detect.json"),
    params: opt.ParamsOpt = None,
    set_: opt.set_option("min_prob=0.95") = None,
) -> None:
    """Find faces (MTCNN), align them on the eye line and crop them to size x size; with
    `domain: objects` (detector none) the whole image, letterboxed or centre-cropped.

    Every raw file ends in data/faces/manifest.csv or rejects.csv with a reason:
    outside_root (a link leaving the folder), no_class (not in a class folder),
    unreadable, too_large, no_face, low_prob, multiple_faces, too_small,
    truncated_face, processing_failed (the error in `detail`).
    """
    from stages import detect as stage

    use_engine(engine)
    require_inputs(raw)
    p = stage_params(
        "detect", params, set_, min_prob=min_prob, multi_face=multi_face, device=device
    )
    refuse_dvc_outputs(out, report)
    finish(stage.run(p.detect, raw, out), report)


@user_errors
def embed(
    faces: FacesArg = Path("data/faces/manifest.csv"),
    out: opt.option(Path, "Embeddings of these crops (.npz)") = Path("data/embeddings.npz"),
    cache: opt.option(Path, "Vectors by crop sha256, kept across runs (.npz)") = Path(
        "data/embed_cache.npz"
    ),
    embedder: EMBED.flag(str, "embedder", "`prep list embedders`") = None,
    workers: EMBED.flag(int, "workers", "Processes (dlib); 0 = one per core") = None,
    engine: opt.EngineOpt = None,
    report: opt.ReportOpt = Path("reports/embed.json"),
    params: opt.ParamsOpt = None,
    set_: opt.set_option("num_jitters=1") = None,
) -> None:
    """Embed every crop (faces: dlib ResNet; objects: EfficientNet-Lite0), reusing cached
    vectors by content hash.

    clean uses the vectors to find the wrong person (objects: the wrong label) in a class
    and the same image under two names; baseline classifies with them.
    """
    from stages import embed as stage

    use_engine(engine)
    require_inputs(faces)
    p = stage_params("embed", params, set_, embedder=embedder, workers=workers)
    refuse_dvc_outputs(out, cache, report)
    result = stage.run(p.embed, faces, out, cache)
    finish(result, report)
    typer.echo(f"{result.runtime['computed']} computed, {result.runtime['cached']} from the cache")


@user_errors
def clean(
    faces: FacesArg = Path("data/faces/manifest.csv"),
    out: opt.option(Path, "manifest.csv + rejects.csv (no image copies)") = Path("data/clean"),
    embeddings: opt.option(Path, "Vectors from `prep embed` for the identity checks") = Path(
        "data/embeddings.npz"
    ),
    identity: opt.option(
        bool, "Identity checks and embedding groups (--no-identity: pixels only)"
    ) = True,
    report: opt.ReportOpt = Path("reports/clean.json"),
    params: opt.ParamsOpt = None,
    set_: opt.set_option("blur_relative=0.2") = None,
) -> None:
    """Drop duplicates, blurry or tiny faces, wrong people, label conflicts, small classes.

    Checks run in order and each reject gets the most specific reason; look-alikes that
    survive share a group, which split keeps on one side.
    """
    from stages import clean as stage

    require_inputs(faces)
    p = stage_params("clean", params, set_)
    refuse_dvc_outputs(out, report)
    finish(stage.run(p.clean, faces, out, embeddings if identity else None), report)


@user_errors
def split(
    clean_manifest: opt.argument(Path, "Manifest from clean") = Path("data/clean/manifest.csv"),
    out: opt.option(Path, "manifest.csv with a split column") = Path("data/split"),
    train_per_class: SPLIT.flag(int, "train_per_class", "Train images per class") = None,
    train_fraction: SPLIT.flag(float, "train_fraction", "...or a fraction of each") = None,
    val_per_class: SPLIT.flag(int, "val_per_class", "Validation images per class") = None,
    seed: opt.SeedOpt = None,
    report: opt.ReportOpt = Path("reports/split.json"),
    params: opt.ParamsOpt = None,
    set_: opt.set_option("val_per_class=2") = None,
) -> None:
    """Assign train / val / test per class, stratified and seeded; the rest is test."""
    from stages import split as stage

    require_inputs(clean_manifest)
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
    refuse_dvc_outputs(out, report)
    finish(stage.run(p.split, p.seed, clean_manifest, out), report)
