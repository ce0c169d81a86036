"""`prep summary --experiments`: DVC experiments as one short row each.

``dvc exp show`` prints every param and every metric of every file: hundreds of columns. Here a
row keeps the experiment's name, only the params whose values differ between the rows (what
the experiments varied), and a few headline metrics, within a terminal's width.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from pipeline.cli.efficiency import Run

# (header, "file:key" in `dvc exp show`, format): what a few-shot run is judged by
HEADLINE: tuple[tuple[str, str, Callable[[Any], str]], ...] = (
    ("test acc", "metrics/test.json:accuracy", lambda v: f"{v:.1%}"),
    ("baseline", "reports/baseline.json:logistic_regression.accuracy", lambda v: f"{v:.1%}"),
    ("train imgs", "dvclive/metrics.json:n_train", lambda v: f"{v:.0f}"),
)
MAX_CELL = 14  # a longer param value (a list, a path) is cut: the row must stay short
MAX_NAME = 20
MISSING = "-"


def varying_params(runs: Sequence[Run]) -> list[str]:
    """Params whose value is not the same in every run, in params.yaml order."""
    names = list(dict.fromkeys(name for run in runs for name in run.params))
    return [n for n in names if len({_cell(run.params, n) for run in runs}) > 1]


# keys that say nothing without their section: `enabled` alone read as the pipeline's switch
GENERIC = {"enabled", "device", "workers", "batch_size", "size", "jpeg_quality", "weights"}


def short_names(names: Sequence[str]) -> list[str]:
    """``augment.factor`` -> ``factor``, unless another column would get the same name or the
    key is generic (``generate.enabled`` stays whole)."""
    last = [name.rsplit(".", 1)[-1] for name in names]
    return [
        s if last.count(s) == 1 and s not in GENERIC else n
        for n, s in zip(names, last, strict=True)
    ]


def table(runs: Sequence[Run], width: int = 100) -> str:
    """One line per run: name, the params that vary, the headline metrics; fits ``width``."""
    params = varying_params(runs)
    metric_cols = [
        [header] + [_metric(run, key, fmt) for run in runs] for header, key, fmt in HEADLINE
    ]
    param_cols = [
        [header] + [_cell(run.params, name) for run in runs]
        for header, name in zip(short_names(params), params, strict=True)
    ]
    name_col = ["experiment"] + [_clip(run.name, MAX_NAME) for run in runs]
    shown = _fit([name_col, *metric_cols], param_cols, width)
    columns = [name_col, *param_cols[:shown], *metric_cols]
    lines = [_line(row, columns) for row in range(len(runs) + 1)]
    if shown < len(params):
        hidden = ", ".join(params[shown:])
        note = f"(+{len(params) - shown} varying params not shown, see --width: {hidden})"
        lines.append(_clip(note, width))
    return "\n".join(lines)


def _fit(fixed: list[list[str]], optional: list[list[str]], width: int) -> int:
    """How many of the ``optional`` columns fit beside the ``fixed`` ones."""
    used = sum(_width(c) for c in fixed) + 2 * (len(fixed) - 1)
    count = 0
    for column in optional:
        used += _width(column) + 2
        if used > width:
            break
        count += 1
    return count


def _width(column: list[str]) -> int:
    return max(len(cell) for cell in column)


def _line(row: int, columns: list[list[str]]) -> str:
    name, *rest = columns
    cells = [name[row].ljust(_width(name))] + [c[row].rjust(_width(c)) for c in rest]
    return "  ".join(cells).rstrip()


def _cell(params: dict[str, Any], name: str) -> str:
    if name not in params:
        return MISSING
    value = params[name]
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return _clip(text, MAX_CELL)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _metric(run: Run, key: str, fmt: Callable[[Any], str]) -> str:
    value = run.metrics.get(key)
    return MISSING if not isinstance(value, int | float) else fmt(value)
