"""`prep list`, `params`, `backbones`: what there is to choose from, and what is chosen.

Registries are imported only when listed, so that ``prep --help`` stays fast.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import typer

from pipeline.cli import options as opt
from pipeline.cli.running import user_errors
from pipeline.core.errors import UserError
from pipeline.core.files import atomic_write_text
from pipeline.core.params import PARAMS_FILE, load_params, project_params_text

REGISTRIES = {  # kind -> (module, registry)
    "recipes": ("pipeline.components.recipes", "RECIPES"),
    "detectors": ("pipeline.components.detectors", "DETECTORS"),
    "backbones": ("pipeline.components.backbones", "BACKBONES"),
    "generators": ("pipeline.components.generators", "GENERATORS"),
    "embedders": ("pipeline.components.embedders", "EMBEDDERS"),
    "checks": ("pipeline.components.label_checks", "CHECKS"),
}
WEIGHTS_MEANING = {  # backbones.weights_status -> the "weights here" column
    "bundled": "yes (in a package)",
    "cached": "yes (cached)",
    "none": "n/a (scratch)",
    "download": "no: downloads online, or set train.weights",
    "missing": "no",
}


@user_errors
def list_components(
    kind: opt.argument(
        str, "recipes | detectors | backbones | generators | embedders | checks"
    ) = "recipes",
) -> None:
    """List registered components by name, with one line of help each; `[default: faces]`
    marks what `auto` means in that domain (params.yaml `domain`)."""
    if kind not in REGISTRIES:
        raise UserError(f"unknown kind {kind!r}; choose from {', '.join(REGISTRIES)}")
    for entry in _registry(kind).entries():
        marker = f"  [default: {', '.join(entry.default_for)}]" if entry.default_for else ""
        typer.echo(f"{entry.name:<20} {entry.help}{marker}")


def _registry(kind: str) -> Any:
    module, name = REGISTRIES[kind]
    return getattr(importlib.import_module(module), name)


@user_errors
def show_params(
    params: opt.ParamsOpt = None,
    set_: opt.SetOpt = None,
    init: opt.option(
        bool, "Write ./params.yaml: every key of the shipped defaults, to edit (DVC reads it)"
    ) = False,
) -> None:
    """Print the effective parameters (defaults, params.yaml, then --set section.key=value)."""
    if init:
        _write_project_params(Path(PARAMS_FILE))
        return
    p = load_params(params, set_ or [])
    typer.echo(json.dumps(p.model_dump(mode="json"), indent=2))


def _write_project_params(path: Path) -> None:
    if path.exists():
        raise UserError(f"{path} exists; it is the project's params (remove it to start over)")
    atomic_write_text(path, project_params_text())
    typer.echo(f"wrote {path}: every key of the shipped defaults; edit what this project changes")


@user_errors
def list_backbones(
    layers: opt.option(
        str | None, "Print this backbone's numbered layers (what freeze counts)"
    ) = None,
) -> None:
    """List backbones: whether their weights are available here, input size, layer count."""
    from pipeline.components.backbones import BACKBONES, get_backbone, layer_names, weights_status

    if layers:
        for index, (name, kind) in enumerate(layer_names(get_backbone(layers))):
            typer.echo(f"{index:>4}  {kind:<24} {name}")
        return
    typer.echo(f"{'name':<20} {'size':>4} {'layers':>6}  {'weights here':<42} about")
    for entry in BACKBONES.entries():
        backbone = get_backbone(entry.name)
        status = WEIGHTS_MEANING[weights_status(backbone)]
        n_layers = len(layer_names(backbone))
        marker = f"  [default: {', '.join(entry.default_for)}]" if entry.default_for else ""
        typer.echo(
            f"{entry.name:<20} {backbone.input_size:>4} {n_layers:>6}  {status:<42} "
            f"{entry.help}{marker}"
        )
