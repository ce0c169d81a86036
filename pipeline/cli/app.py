"""`prep`: every pipeline stage as a command, with or without DVC.

Defaults come from params.yaml; typed flags and ``--set key=value`` override them.
Stage modules are imported inside each command so that ``prep --help`` stays fast.

The commands live in modules by what they do (options.py and running.py hold what they
share); ``COMMANDS`` below registers all of them on the one ``app``, in the order
``prep --help`` lists them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from importlib import metadata
from typing import Annotated, Any

import typer

from pipeline.cli import data_commands, expand_commands, listings, model_commands, views
from pipeline.cli import prepare_commands as prepare
from pipeline.cli.options import markup_safe, params_epilog

HELP = {"help_option_names": ["-h", "--help"]}  # `prep -h`, `prep detect -h`

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
    context_settings=HELP,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"prep (fewshot-prep) {metadata.version('fewshot-prep')}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version")
    ] = False,
) -> None:
    """Few-shot image dataset preparation (see `prep -h`)."""


# (name, command, the params.yaml section its help's epilog tables; None: it has none)
COMMANDS: list[tuple[str, Callable[..., Any], str | None]] = [
    ("sample-data", data_commands.sample_data, "sample_data"),
    ("real-faces", data_commands.real_faces, None),
    ("fashion-mnist", data_commands.fashion_mnist, None),
    ("detect", prepare.detect, "detect"),
    ("embed", prepare.embed, "embed"),
    ("clean", prepare.clean, "clean"),
    ("split", prepare.split, "split"),
    ("baseline", model_commands.baseline, "baseline"),
    ("generate", expand_commands.generate, "generate"),
    ("augment", expand_commands.augment, "augment"),
    ("show", views.show, None),
    ("list", listings.list_components, None),
    ("params", listings.show_params, None),
    ("summary", views.summary, None),
    ("train", model_commands.train, "train"),
    ("evaluate", model_commands.evaluate, "evaluate"),
    ("report", views.efficiency_report, None),
    ("plots", views.plots, None),
    ("backbones", listings.list_backbones, None),
]

for name, command, section in COMMANDS:
    app.command(
        name,
        help=markup_safe(inspect.getdoc(command) or ""),
        context_settings=HELP,
        epilog=markup_safe(params_epilog(section)) if section else None,
    )(command)
