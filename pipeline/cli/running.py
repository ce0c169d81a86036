"""What every command does around its stage: params in, errors out, DVC's files left alone.

A command reads its params with ``stage_params``, refuses to write over what DVC owns with
``refuse_dvc_outputs``, runs the stage and hands its report to ``finish``; ``user_errors``
turns the errors a user can fix into one line and exit code 2.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import typer
import yaml

from pipeline.core.config import Params
from pipeline.core.engines import current_engine, import_ray, select_engine
from pipeline.core.errors import UserError
from pipeline.core.params import PARAMS_FILE, keys_missing_from, load_params, parse_overrides
from pipeline.core.registry import UnknownNameError
from pipeline.core.report import StageReport, runtime_path, write_json

F = TypeVar("F", bound=Callable[..., Any])


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
    path = params_file or Path(PARAMS_FILE)
    if os.environ.get("DVC_STAGE") and path.is_file():  # (without one, DVC itself refuses)
        _refuse_untracked_defaults(path, section)
    overrides = parse_overrides([_scoped(section, item) for item in sets or []])
    for name, value in flags.items():
        if value is not None:
            overrides["seed" if name == "seed" else f"{section}.{name}"] = value
    return load_params(params_file, overrides)


def use_engine(name: str | None) -> None:
    """``--engine`` (None: PREP_ENGINE decides); a missing Ray fails here, before any work."""
    select_engine(name)
    if current_engine() == "ray":
        import_ray()


def _refuse_untracked_defaults(path: Path, section: str) -> None:
    """Under ``dvc repro`` every value must come from params.yaml: DVC tracks that file alone,
    so a value taken from the shipped defaults would change unseen with a new version."""
    missing = keys_missing_from(path, section)
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        shown = ", ".join(missing[:5]) + more
        raise UserError(
            f"{path} lacks {shown}: DVC tracks {path} alone, so these would silently take the "
            "shipped defaults. Add them (`prep params --init` writes every key, to copy from)"
        )


def _scoped(section: str, item: str) -> str:
    """``-s key=value`` is the stage's own key (nested ones too: ``backends.warp.strength``)
    unless it starts with a section name or is a top-level key (``seed``)."""
    first = item.partition("=")[0].split(".")[0].strip()
    return item if first in Params.model_fields else f"{section}.{item}"


def require_inputs(*paths: Path) -> None:
    """A missing input is the first thing to say: before params and DVC's outputs, whose
    complaints would send the user after the wrong problem."""
    for path in paths:
        if not path.exists():
            raise UserError(f"{path} does not exist")


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
    """Write the metrics, and the runtime figures to ``runtime``; print both.

    Without ``runtime``, the figures go to reports/runtime/<stage>.json only beside the
    pipeline's own report (reports/<stage>.json): a report written elsewhere
    (``--report out/x.json``) is that one file, and the figures are only printed.
    """
    if report_path is not None:
        write_json(report_path, report.to_dict())
        if runtime is None and _is_pipeline_report(report_path, report.stage):
            runtime = runtime_path(report_path)
    if runtime is not None:
        report.write_runtime(runtime)
    typer.echo(report.summary())


def _is_pipeline_report(path: Path, stage: str) -> bool:
    return path.resolve() == (Path("reports") / f"{stage}.json").resolve()
