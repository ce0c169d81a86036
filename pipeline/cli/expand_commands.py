"""`prep generate` and `prep augment`: more training images from the few there are.

generate makes expression variants that keep the person (checked by embedding distance);
augment expands every training image, and generate's variants, with classic transforms.
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

DEFAULT_AUG = Path("data/augmented")
GENERATE = opt.Section("generate")
AUGMENT = opt.Section("augment")


@user_errors
def generate(
    split_manifest: opt.argument(Path, "Manifest whose train rows get variants") = Path(
        "data/split/manifest.csv"
    ),
    out: opt.option(Path, "Variants + manifest.csv + rejects.csv") = Path("data/generated"),
    enabled: GENERATE.flag(bool, "enabled", "Run the stage", "--enable/--disable") = None,
    backend: GENERATE.flag(str, "backend", "warp / stargan / instruct-pix2pix / img2img") = None,
    expressions: GENERATE.flag(str, "expressions", "Comma-separated, e.g. smile,frown") = None,
    variants: GENERATE.flag(int, "variants_per_image", "Variants per training image") = None,
    threshold: GENERATE.flag(float, "identity_threshold", "Identity distance limit") = None,
    model: opt.option(str | None, "Diffusion: hub id or local folder (backends.<b>.model)") = None,
    checkpoint: opt.option(str | None, "StarGAN checkpoint (backends.stargan.checkpoint)") = None,
    device: opt.option(str | None, f"{opt.DEVICES} (the chosen backend's device)") = None,
    engine: opt.EngineOpt = None,
    seed: opt.SeedOpt = None,
    report: opt.ReportOpt = Path("reports/generate.json"),
    params: opt.ParamsOpt = None,
    set_: opt.set_option("variants_per_image=2") = None,
) -> None:
    """Make expression variants of each training image; keep the same person.

    Backends (`prep list generators`), each with its own section `backends.<name>` in
    the table below; only the chosen one counts (and, under DVC, only its edits rerun the
    stage): `-s backends.warp.strength=1.5`.

    - **warp**: dlib's 68 landmarks moved, thin-plate-spline warp; CPU, no model
    - **stargan**: the StarGAN generator from a checkpoint file, e.g. RaFD's
    - **instruct-pix2pix**: diffusers' InstructPix2Pix, an instruction per expression
    - **img2img**: diffusers' image-to-image (SDEdit), a prompt per expression

    Several GPUs: `accelerate launch --multi_gpu --num_processes N -m pipeline.cli
    generate ...` (or torchrun).

    Each variant is embedded with the `embed` section's embedder and kept only below
    identity_threshold; the others go to rejects.csv as identity_lost, with the distance.
    Disabled (the default), it writes an empty manifest.
    """

    from stages import generate as stage

    use_engine(engine)
    require_inputs(split_manifest)
    listed = [e.strip() for e in expressions.split(",") if e.strip()] if expressions else None
    sets = list(set_ or [])
    chosen = stage_params("generate", params, sets, backend=backend).generate.backend
    for key, value in (("model", model), ("checkpoint", checkpoint), ("device", device)):
        if value is not None:  # a flag for a backend's key means the chosen backend's
            sets.append(f"backends.{chosen}.{key}={value}")
    p = stage_params(
        "generate", params, sets, enabled=enabled, backend=backend, expressions=listed,
        variants_per_image=variants, identity_threshold=threshold, seed=seed,
    )  # fmt: skip
    refuse_dvc_outputs(out, report)
    finish(stage.run(p.generate, p.embed, p.seed, split_manifest, out), report)


@user_errors
def augment(
    source: opt.argument(
        Path, "A manifest (train rows are used) or any ImageFolder, e.g. data/raw"
    ) = Path("data/split/manifest.csv"),
    out: opt.option(
        Path | None,
        "Output ImageFolder + manifest.csv (default: data/augmented for a manifest, "
        "<folder>_augmented beside an ImageFolder)",
    ) = None,
    factor: AUGMENT.flag(int, "factor", "Images per source, original included") = None,
    recipe: AUGMENT.flag(str, "recipe", "`prep list recipes` or an albumentations YAML") = None,
    keep_original: opt.option(
        bool | None, "Variant 0 = source", "--keep-original/--no-keep-original"
    ) = None,
    workers: AUGMENT.flag(int, "workers", "Processes; 0 = one per core") = None,
    engine: opt.EngineOpt = None,
    seed: opt.SeedOpt = None,
    generated: opt.option(Path | None, "Manifest of generated variants to expand too") = None,
    dry_run: opt.option(bool, "Plan and count, write nothing") = False,
    report: opt.ReportOpt = None,
    params: opt.ParamsOpt = None,
    set_: opt.set_option("factor=4") = None,
) -> None:
    """Expand each training image N times with classic transforms (albumentations).

    Outputs are byte-identical for any worker count: each output's seed comes from
    (seed, source sha256, variant index), and its applied parameters are stored
    in the manifest's `params` column. `prep augment --factor 8 data/raw` works on any
    ImageFolder, without DVC, and writes data/raw_augmented/.
    """
    from stages import augment as stage

    use_engine(engine)
    if out is None:  # an ImageFolder is a standalone run: never into the pipeline's folder
        folder = source.suffix.lower() != ".csv"
        out = source.with_name(f"{source.name}_augmented") if folder else DEFAULT_AUG
    require_inputs(source)
    p = stage_params(
        "augment", params, set_, factor=factor, recipe=recipe, keep_original=keep_original,
        workers=workers, seed=seed,
    )  # fmt: skip
    if not dry_run:
        refuse_dvc_outputs(out, report)
    result = stage.run(p.augment, p.seed, source, out, generated=generated, dry_run=dry_run)
    finish(result, None if dry_run else report)
    if dry_run:  # "kept" counts sources planned, before any is decoded: say so
        typer.echo(
            f"nothing written; the run would write up to {result.extra['outputs']} images to "
            f"{out}/. Sources are not decoded here: unreadable, too large or too small ones "
            "are found (and rejected) by the run itself."
        )
