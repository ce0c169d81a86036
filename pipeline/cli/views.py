"""`prep show`, `summary`, `report`, `plots`: what the stages and experiments produced.

These read what the stages wrote (manifests, reports, DVC's experiments and plots) and
draw or print it; they run no stage.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from pipeline.cli import options as opt
from pipeline.cli.running import user_errors
from pipeline.core.errors import UserError

# every stage's rejects, in pipeline order (embed and baseline reject nothing)
STAGE_REJECTS = tuple(
    Path("data", folder, "rejects.csv")
    for folder in ("faces", "clean", "split", "generated", "augmented")
)
STAGE_ORDER = (
    "detect", "embed", "clean", "split", "baseline", "generate", "augment", "train", "evaluate",
)  # fmt: skip


@user_errors
def show(
    manifest: opt.argument(
        Path | None,
        "An augment manifest (default data/augmented/manifest.csv), or with "
        "--rejects a rejects.csv (default: every stage's under data/)",
    ) = None,
    rejects: opt.option(bool, "Audit sheet of rejected images, by reason", "--rejects") = False,
    out: opt.option(
        Path | None, "PNG to write (default reports/augment_sheet.png or rejects_sheet.png)"
    ) = None,
    sources: opt.option(int, "How many source images (rows)") = 8,
    per_reason: opt.option(int, "--rejects: at most this many per reason") = 24,
    thumb: opt.option(int, "Thumbnail size in pixels") = 96,
) -> None:
    """Write a contact sheet: one row per source image, its variants beside it.

    With --rejects: every rejected image grouped by reason, with its class and the
    image it conflicts with (kept duplicate, same face in another class, look-alike).
    """
    from pipeline.cli.contact_sheet import augment_sheet, rejects_sheet

    if rejects:
        out = out or Path("reports/rejects_sheet.png")
        files = [manifest] if manifest else [p for p in STAGE_REJECTS if p.is_file()]
        if not files:
            raise UserError("no rejects.csv under data/: run `dvc repro` or a stage first")
        counts = rejects_sheet(files, out, thumb=thumb, per_reason=per_reason)
        shown = ", ".join(f"{k} {v}" for k, v in counts.items()) or "none"
        typer.echo(f"wrote {out} (rejects: {shown})")
        return
    out = out or Path("reports/augment_sheet.png")
    augment_sheet(manifest or Path("data/augmented/manifest.csv"), out, sources, thumb)
    typer.echo(f"wrote {out}")


@user_errors
def summary(
    reports: opt.argument(Path, "Folder of stage reports") = Path("reports"),
    experiments: opt.option(
        bool, "One row per DVC experiment instead", "--experiments", "-e"
    ) = False,
    exp_json: opt.option(
        Path | None, "With -e: saved `dvc exp show --json` output (default: run it here)"
    ) = None,
    width: opt.option(int, "With -e: the widest line, in characters") = 100,
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
    for line in _model_lines(reports.parent):
        typer.echo(line)


# (stage, its metrics file, [(label, key, format)]): train and evaluate count no rejects, so
# their rows say what they trained on and what they scored; baseline's its two accuracies
# (the bar evaluate's must clear). A key "a.b" is a nested value.
MODEL_METRICS = (
    ("train", "dvclive/metrics.json",
     [("images", "n_train", "{:.0f}"), ("val", "n_val", "{:.0f}"),
      ("best val acc", "best_val_acc", "{:.1%}")]),
    ("baseline", "reports/baseline.json",
     [("nearest-centre acc", "nearest_centre.accuracy", "{:.1%}"),
      ("logistic acc", "logistic_regression.accuracy", "{:.1%}")]),
    ("evaluate", "metrics/test.json",
     [("test images", "n_test", "{:.0f}"), ("accuracy", "accuracy", "{:.1%}"),
      ("macro-F1", "macro_f1", "{:.3f}")]),
)  # fmt: skip


def _model_lines(root: Path) -> list[str]:
    """One line each for train and evaluate, from their metrics files when they ran."""
    lines = []
    for stage, name, fields in MODEL_METRICS:
        if not (root / name).is_file():
            continue
        data = json.loads((root / name).read_text())
        values = [(label, _dotted(data, key), fmt) for label, key, fmt in fields]
        shown = [
            f"{label} {fmt.format(value)}" for label, value, fmt in values if value is not None
        ]
        lines.append(f"{stage:<10} {', '.join(shown) or '-'}  ({name})")
    return lines


def _dotted(data: dict[str, Any], key: str) -> Any:
    """``data["a"]["b"]`` for key "a.b"; None where a level is missing."""
    for part in key.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def _experiments_summary(exp_json: Path | None, width: int) -> None:
    from pipeline.cli import efficiency, experiments

    data = json.loads(exp_json.read_text()) if exp_json else efficiency.dvc_exp_show()
    runs = efficiency.exp_show_rows(data)
    if not runs:
        raise UserError("no experiments with metrics yet: run `dvc repro` or `dvc exp run` first")
    typer.echo(experiments.table(runs, width))


def _stage_order(path: Path) -> tuple[int, str]:
    """Stage reports in pipeline order, then any other report by name."""
    order = STAGE_ORDER
    return (order.index(path.stem) if path.stem in order else len(order), path.stem)


@user_errors
def efficiency_report(
    exp_json: opt.option(
        Path | None, "Saved `dvc exp show --json` output (default: run it here)"
    ) = None,
    out: opt.option(Path, "Writes OUT.md, OUT.csv, OUT.png") = Path("reports/efficiency"),
    metric: opt.option(str, "file:key of the metric") = "metrics/test.json:accuracy",
    group_by: opt.option(
        list[str] | None,
        "Param defining a setting (repeatable; default: augment.factor, recipe, train.source "
        "and every other param that differs between runs, seed and the train size aside)",
    ) = None,
    include_commits: opt.option(bool, "Count commits as runs too, not only experiments") = False,
) -> None:
    """Data-efficiency table and plot from DVC experiments: accuracy vs images per class.

    One line per setting (the augmentation, and every other param that differs between
    runs, e.g. generate.enabled); repeats (e.g. seeds) give mean ± std; each line is
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
    groups = tuple(group_by) if group_by else None  # None: every param that differs
    typer.echo(efficiency.write_report(runs, out, metric, groups))
    typer.echo(f"{len(runs)} experiment(s); wrote {out}.md, {out}.csv, {out}.png")


@user_errors
def plots(
    out: opt.option(Path, "Folder for the PNG files") = Path("reports/plots"),
    html: opt.option(bool, "Also write OUT/index.html: DVC's interactive page, offline") = False,
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
