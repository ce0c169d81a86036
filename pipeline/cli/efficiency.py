"""The data-efficiency report: accuracy against images per class, one line per setting.

Input is ``dvc exp show --json``: each experiment's params and metrics. Runs are grouped by
their augmentation setting (``augment.factor``, ``augment.recipe``, ``train.source``) and by
every other param that differs between them (``generate.enabled``, ``train.epochs``...: runs
with different settings are never pooled), unless the grouping params are given; and by
x = ``split.train_per_class`` (or ``100 * split.train_fraction`` when no run sets a count).
``augment.recipe: auto`` counts as the recipe it resolved to in the run's ``domain`` (medium for
faces, keras for objects), so auto runs of two domains never pool as one recipe.
Runs that differ only in ``seed`` are repeats, summarised as mean, standard deviation, min, max.
Each group's means are fitted with ``acc = a * ln(x) + b`` -- the shape earlier few-shot
experiments found (acc ~ 21.3 ln(x) - 10.8, R^2 0.996, over train fractions of 10-90 %) -- so
"what does one more image per class buy" becomes a single number, a * ln((x+1)/x).
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from pipeline.core.errors import UserError
from pipeline.core.files import atomic_write_bytes, atomic_write_text
from pipeline.core.registry import AUTO

DEFAULT_METRIC = "metrics/test.json:accuracy"
DEFAULT_GROUP_BY = ("augment.factor", "augment.recipe", "train.source")


@dataclass(frozen=True)
class Run:
    """One experiment: its name, flattened params (``section.key``) and metrics."""

    name: str
    params: dict[str, Any]
    metrics: dict[str, Any]  # "file:key.sub" -> value


@dataclass(frozen=True)
class LogFit:
    a: float
    b: float
    r2: float | None  # None when the points have no spread to explain

    def __call__(self, x: float) -> float:
        return self.a * math.log(x) + self.b


@dataclass(frozen=True)
class Cell:
    """The repeats of one (setting, x) point."""

    group: str
    x: float
    values: tuple[float, ...]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float:
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0


# --- reading experiments ----------------------------------------------------------------


def runs_from_exp_show(data: list[dict[str, Any]], include_commits: bool = False) -> list[Run]:
    """Experiments from ``dvc exp show --json``. Commits (not the workspace) are added only when
    asked for or when there are no experiments: they usually repeat an experiment's params."""
    commits = [run for node in data if node.get("rev") != "workspace" and (run := _as_run(node))]
    experiments = [run for node in data for run in _children(node)]
    return experiments + commits if include_commits or not experiments else experiments


def exp_show_rows(data: list[dict[str, Any]]) -> list[Run]:
    """Every row of ``dvc exp show`` that has metrics, in its order: the workspace, then each
    commit followed by its experiments (queued or failed ones have no metrics yet)."""
    rows: list[Run] = []
    for node in data:
        rows += [run] if (run := _as_run(node)) else []
        rows += _children(node)
    return rows


def _children(node: dict[str, Any]) -> Iterator[Run]:
    for group in node.get("experiments") or []:
        for rev in group.get("revs") or []:
            if run := _as_run(rev):
                yield run
            yield from _children(rev)


def _as_run(node: dict[str, Any]) -> Run | None:
    data = node.get("data") or {}
    if node.get("error") or not data.get("metrics"):
        return None
    params: dict[str, Any] = {}
    for content in (data.get("params") or {}).values():
        params.update(flatten(content.get("data") or {}))
    metrics: dict[str, Any] = {}
    for file, content in data["metrics"].items():
        metrics.update({f"{file}:{k}": v for k, v in flatten(content.get("data") or {}).items()})
    rev = str(node.get("rev", ""))
    return Run(node.get("name") or (rev if rev == "workspace" else rev[:7]), params, metrics)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


# --- aggregation and fitting (pure) -----------------------------------------------------


def fit_log(xs: Sequence[float], ys: Sequence[float]) -> LogFit | None:
    """Least-squares ``y = a ln(x) + b`` and its R^2; None with fewer than two distinct x."""
    if len(xs) != len(ys) or len(set(xs)) < 2 or min(xs) <= 0:
        return None
    logs = [math.log(x) for x in xs]
    mean_l, mean_y = statistics.fmean(logs), statistics.fmean(ys)
    sxx = sum((v - mean_l) ** 2 for v in logs)
    a = sum((v - mean_l) * (y - mean_y) for v, y in zip(logs, ys, strict=True)) / sxx
    b = mean_y - a * mean_l
    ss_tot = sum((y - mean_y) ** 2 for y in ys)
    ss_res = sum((y - (a * v + b)) ** 2 for v, y in zip(logs, ys, strict=True))
    return LogFit(a, b, None if ss_tot == 0 else 1.0 - ss_res / ss_tot)


def x_axis(runs: Sequence[Run]) -> tuple[str, str]:
    """(param, axis label): images per class when any run sets it, else the train fraction."""
    if any(r.params.get("split.train_per_class") is not None for r in runs):
        return "split.train_per_class", "images per class"
    return "split.train_fraction", "train fraction (%)"


def group_label(params: dict[str, Any], group_by: Sequence[str]) -> str:
    """The setting a run belongs to, e.g. 'factor 8, recipe medium' or 'no augmentation'.

    Factor 1 and training on the split both mean no augmentation, whatever the recipe; other
    grouping params (e.g. ``train.epochs``) are appended so that they still split the runs.
    """
    none = params.get("augment.factor") == 1 or params.get("train.source") == "split"
    parts = ["no augmentation"] if none else []
    for key in group_by:
        augment_key = key.startswith("augment.") or key == "train.source"
        if key in params and not (augment_key and (none or key == "train.source")):
            name = key.split(".")[-1] if key in DEFAULT_GROUP_BY else key  # "generate.enabled"
            parts.append(f"{name} {params[key]}")
    return ", ".join(parts) or "all runs"


def resolve_recipe(params: dict[str, Any]) -> dict[str, Any]:
    """``params`` with ``augment.recipe: auto`` replaced by the recipe it means in the run's
    ``domain`` (faces when unset: runs from before domains existed): the registry decides."""
    if params.get("augment.recipe") != AUTO:
        return params
    from pipeline.components.recipes import RECIPES  # albumentations: only when needed

    domain = str(params.get("domain") or "faces")
    return params | {"augment.recipe": RECIPES.resolve(AUTO, domain)}


def differing_params(runs: Sequence[Run], exclude: Sequence[str]) -> list[str]:
    """Params (sorted) whose value is not the same in every run, ``exclude`` left out."""
    keys = sorted({key for run in runs for key in run.params} - set(exclude))
    values = [
        {json.dumps(run.params.get(key), sort_keys=True, default=str) for run in runs}
        for key in keys
    ]
    return [key for key, seen in zip(keys, values, strict=True) if len(seen) > 1]


def default_group_by(runs: Sequence[Run]) -> tuple[str, ...]:
    """The augmentation setting, then every other param that differs (seed: repeats; the
    train size: the x axis)."""
    axis = ("seed", "split.train_per_class", "split.train_fraction", *DEFAULT_GROUP_BY)
    return (*DEFAULT_GROUP_BY, *differing_params(runs, axis))


def aggregate(
    runs: Sequence[Run], metric: str = DEFAULT_METRIC, group_by: Sequence[str] | None = None
) -> tuple[list[Cell], str]:
    """Cells (one per setting and x, repeats pooled) and the x-axis label; percent values.

    ``group_by`` None: ``default_group_by(runs)``."""
    runs = [replace(run, params=resolve_recipe(run.params)) for run in runs]
    group_by = default_group_by(runs) if group_by is None else group_by
    param, label = x_axis(runs)
    pooled: dict[tuple[str, float], list[float]] = defaultdict(list)
    for run in runs:
        x, value = run.params.get(param), run.metrics.get(metric)
        if x is None or not isinstance(value, int | float):
            continue
        x = 100.0 * x if param == "split.train_fraction" else float(x)
        pooled[(group_label(run.params, group_by), x)].append(100.0 * value)
    cells = [Cell(g, x, tuple(v)) for (g, x), v in sorted(pooled.items())]
    return cells, label


def fits(cells: Sequence[Cell]) -> dict[str, LogFit | None]:
    """One log fit per setting, over the means at each x."""
    by_group: dict[str, list[Cell]] = defaultdict(list)
    for cell in cells:
        by_group[cell.group].append(cell)
    return {g: fit_log([c.x for c in cs], [c.mean for c in cs]) for g, cs in by_group.items()}


# --- writing ----------------------------------------------------------------------------


def markdown(cells: Sequence[Cell], fitted: dict[str, LogFit | None], x_label: str) -> str:
    lines = [
        f"| setting | {x_label} | runs | accuracy % mean ± std | min | max |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for c in cells:
        lines.append(
            f"| {c.group} | {c.x:g} | {len(c.values)} | {c.mean:.1f} ± {c.std:.1f} "
            f"| {min(c.values):.1f} | {max(c.values):.1f} |"
        )
    lines.append("")
    for group, fit in fitted.items():
        if fit is None:
            lines.append(f"- {group}: no fit (needs two or more x values)")
            continue
        r2 = "n/a" if fit.r2 is None else f"{fit.r2:.3f}"
        sign = "+" if fit.b >= 0 else "-"
        lines.append(f"- {group}: acc = {fit.a:.1f} * ln(x) {sign} {abs(fit.b):.1f}, R^2 = {r2}")
    return "\n".join(lines) + "\n"


def table_csv(cells: Sequence[Cell]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["setting", "x", "runs", "mean", "std", "min", "max"])
    for c in cells:
        stats = [c.mean, c.std, min(c.values), max(c.values)]
        writer.writerow([c.group, f"{c.x:g}", len(c.values), *(f"{v:.2f}" for v in stats)])
    return buffer.getvalue()


_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf"]


def plot_png(
    cells: Sequence[Cell], fitted: dict[str, LogFit | None], x_label: str, size=(760, 480)
) -> bytes:
    """Means with ±std bars on a log x axis (so the log fit is a straight line), fits dashed."""
    width, height = size
    left, right, top, bottom = 60, 200, 20, 50
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=13)
    xs = sorted({c.x for c in cells}) or [1.0]
    lo, hi = math.log(xs[0]) - 0.1, math.log(xs[-1]) + 0.1

    def px(x: float, y: float) -> tuple[float, float]:
        fx = (math.log(x) - lo) / (hi - lo)
        return left + fx * (width - left - right), top + (1 - y / 100) * (height - top - bottom)

    draw.rectangle([left, top, width - right, height - bottom], outline="black")
    for y in range(0, 101, 20):
        _, py = px(xs[0], y)
        draw.line([left - 4, py, left, py], fill="black")
        draw.text((left - 30, py - 7), f"{y}", fill="black", font=font)
    for x in xs:
        pxx, _ = px(x, 0)
        draw.line([pxx, height - bottom, pxx, height - bottom + 4], fill="black")
        draw.text((pxx - 6, height - bottom + 6), f"{x:g}", fill="black", font=font)
    draw.text((left + 120, height - 22), f"{x_label} (log scale)", fill="black", font=font)
    draw.text((4, 2), "accuracy %", fill="black", font=font)
    for i, group in enumerate(fitted):
        _plot_group(draw, px, [c for c in cells if c.group == group], fitted[group],
                    _COLOURS[i % len(_COLOURS)])  # fmt: skip
        colour, y = _COLOURS[i % len(_COLOURS)], top + 18 * i
        draw.rectangle([width - right + 10, y + 4, width - right + 24, y + 10], fill=colour)
        draw.text((width - right + 30, y), group, fill=colour, font=font)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _plot_group(draw: ImageDraw.ImageDraw, px: Any, cells: list[Cell], fit: LogFit | None,
                colour: str) -> None:  # fmt: skip
    for c in cells:
        x0, y0 = px(c.x, c.mean)
        _, y_lo = px(c.x, c.mean - c.std)
        _, y_hi = px(c.x, c.mean + c.std)
        draw.line([x0, y_lo, x0, y_hi], fill=colour)
        draw.ellipse([x0 - 4, y0 - 4, x0 + 4, y0 + 4], fill=colour)
    if fit is not None and len(cells) > 1:
        steps = [cells[0].x * (cells[-1].x / cells[0].x) ** (k / 40) for k in range(41)]
        points = [px(x, max(0.0, min(100.0, fit(x)))) for x in steps]
        for k in range(0, len(points) - 1, 2):  # dashed
            draw.line([points[k], points[k + 1]], fill=colour, width=2)


def write_report(runs: Sequence[Run], out: Path, metric: str = DEFAULT_METRIC,
                 group_by: Sequence[str] | None = None) -> str:  # fmt: skip
    """``<out>.md``, ``<out>.csv`` and ``<out>.png``; returns the markdown."""
    cells, x_label = aggregate(runs, metric, group_by)
    fitted = fits(cells)
    text = markdown(cells, fitted, x_label)
    atomic_write_text(out.with_suffix(".md"), f"# Data efficiency ({metric})\n\n{text}")
    atomic_write_text(out.with_suffix(".csv"), table_csv(cells))
    atomic_write_bytes(out.with_suffix(".png"), plot_png(cells, fitted, x_label))
    return text


def dvc_exp_show(cwd: Path | None = None) -> list[dict[str, Any]]:
    """Run ``dvc exp show --json`` here (the format ``runs_from_exp_show`` reads)."""
    command = [sys.executable, "-m", "dvc", "exp", "show", "--json"]
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise UserError(f"`dvc exp show --json` failed: {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout)
