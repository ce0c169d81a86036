"""`prep plots`: every plot dvc.yaml declares, as PNG files, offline.

`dvc plots show` writes an HTML page that loads Vega from a CDN, so offline it draws nothing.
Here DVC still does the work it is good at (reading dvc.yaml's ``plots``, the DVCLive curves and
predictions.csv, filling its templates): ``dvc plots show --json`` gives one filled Vega-Lite
spec per plot, and vl-convert (Vega and Vega-Lite compiled into a wheel, fonts included; no
browser, no network) renders each to PNG. What is drawn is DVC's own chart; image plots
(metrics/mistakes.png) are copied as they are. ``html=True`` also writes DVC's interactive page
with those scripts inlined instead of fetched.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core.errors import UserError
from pipeline.core.files import atomic_write_bytes

DEFAULT_OUT = Path("reports/plots")
# DVC's page loads vega-lite 5.2 from its CDN: the oldest 5.x vl-convert ships is the closest.
VL_VERSION = "5.8"
SCALE = 2.0  # DVC's charts are 300 px wide: twice that stays sharp on a laptop screen
HINT = "run `dvc repro` first (train writes dvclive/, evaluate writes metrics/)"


@dataclass(frozen=True)
class Written:
    source: str  # what DVC plotted, e.g. dvclive/plots/metrics/train/loss.tsv
    path: Path  # the PNG written


@dataclass(frozen=True)
class Outcome:
    written: list[Written]
    missing: list[str]  # "<plot>: <why>", one per plot DVC could not read


def png_name(source: str) -> str:
    """``dvclive/plots/metrics/train/loss.tsv`` -> ``dvclive_plots_metrics_train_loss.png``."""
    return Path(source).with_suffix("").as_posix().replace("/", "_") + ".png"


def static_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec as a reader would set it: DVC's checkboxes (the confusion matrix's "show
    values") are ticked, since a PNG has no controls to tick them with."""
    params = [
        {**p, "value": True} if (p.get("bind") or {}).get("input") == "checkbox" else p
        for p in spec.get("params", [])
    ]
    return {**spec, "params": params} if params else spec


def render_png(spec: dict[str, Any]) -> bytes:
    """A Vega-Lite spec (with its data inline) as PNG bytes."""
    import vl_convert  # a 30 MB native module: loaded only when plotting

    return vl_convert.vegalite_to_png(static_spec(spec), vl_version=VL_VERSION, scale=SCALE)


def write_plots(out: Path = DEFAULT_OUT, html: bool = False) -> Outcome:
    """Render the workspace's plots (run in the project root) into ``out``."""
    if not Path("dvc.yaml").is_file():
        raise UserError("no dvc.yaml here: run `prep plots` in the project's root folder")
    with tempfile.TemporaryDirectory(prefix="prep-plots-") as scratch:
        shown = _dvc_plots("--json", "-o", scratch)
        written = [_write_one(source, entry, out) for source, entry in _entries(shown)]
    missing = _missing(shown)
    if not written:
        found = "; ".join(missing) or "dvc.yaml declares no plots"
        raise UserError(f"nothing to plot ({found}): {HINT}")
    if html:
        written.append(Written("dvc plots show", write_html(out)))
    return Outcome(written, missing)


def write_html(out: Path) -> Path:
    """DVC's own interactive page, ``out/index.html``, with Vega inlined: works offline."""
    import vl_convert

    with tempfile.TemporaryDirectory(prefix="prep-plots-") as scratch:
        template = Path(scratch) / "offline.html"
        # dvc_render fills {plot_divs}; leaving out {scripts} drops its CDN <script> tags
        bundle = vl_convert.javascript_bundle(vl_version=VL_VERSION)
        template.write_text(_PAGE.replace("{bundle}", bundle), encoding="utf-8")
        _dvc_plots("--html-template", str(template), "-o", str(out))
    return out / "index.html"


def _entries(shown: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for source, entries in sorted((shown.get("data") or {}).items()):
        for entry in entries:  # one per revision; `dvc plots show` reads the workspace only
            yield source, entry


def _write_one(source: str, entry: dict[str, Any], out: Path) -> Written:
    path = out / png_name(source)
    if entry.get("type") == "image":
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(entry["url"], path)  # DVC's copy of the image, in the scratch folder
    else:
        atomic_write_bytes(path, render_png(entry["content"]))
    return Written(source, path)


def _missing(shown: dict[str, Any]) -> list[str]:
    """DVC's errors, one line each; a missing file (DVC may call it a type error) says so."""
    problems = []
    for error in shown.get("errors") or []:
        name = error.get("name") or error.get("source") or "?"
        why = "not found" if not Path(name).exists() else str(error.get("msg", "")).split("\n")[0]
        problems.append(f"{name}: {why}")
    return problems


def _dvc_plots(*args: str) -> dict[str, Any]:
    """``dvc plots show ARGS`` here; its JSON output when asked for, else {}."""
    command = [sys.executable, "-m", "dvc", "plots", "show", *args]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise UserError(f"`dvc plots show` failed: {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout) if "--json" in args else {}


_PAGE = """<!DOCTYPE html>
<html>
<head>
    <meta charset="UTF-8">
    <title>DVC Plot</title>
    <script type="text/javascript">{bundle}</script>
    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>"""
