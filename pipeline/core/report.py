"""Stage summaries: counts in, kept and rejected by reason, written as DVC metrics.

Figures that change from run to run with the same data and params (speed, seconds, device, what
a cache held) are *runtime*, kept apart from the metrics: otherwise `dvc metrics diff` reports a
change after every rerun. They are printed in the stage's summary line and written to
``runtime_path(report)`` (``reports/runtime/<stage>.json``), which dvc.yaml does not declare.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.core.files import atomic_write_text
from pipeline.core.rows import Rejected

RUNTIME_DIR = "runtime"  # beside the reports: reports/runtime/<stage>.json, git-ignored


def runtime_path(report: Path) -> Path:
    """Where the runtime figures of the report at ``report`` go: ``<dir>/runtime/<name>``."""
    return report.parent / RUNTIME_DIR / report.name


def write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


@dataclass
class StageReport:
    stage: str
    n_in: int = 0
    n_kept: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    extra: dict[str, Any] = field(default_factory=dict)
    runtime: dict[str, Any] = field(default_factory=dict)  # never in to_dict(): not a metric

    @classmethod
    def from_rows(
        cls, stage: str, n_in: int, kept: Sequence[object], rejects: Sequence[Rejected],
        runtime: dict[str, Any] | None = None, **extra: Any,
    ) -> StageReport:  # fmt: skip
        reasons = Counter(str(r.reason) for r in rejects)
        return cls(stage, n_in, len(kept), reasons, dict(extra), dict(runtime or {}))

    @property
    def n_rejected(self) -> int:
        return sum(self.rejected.values())

    def to_dict(self) -> dict[str, Any]:
        """The metrics: the same data and params give the same dict."""
        return {
            "in": self.n_in,
            "kept": self.n_kept,
            "rejected": self.n_rejected,
            "rejected_by_reason": dict(sorted(self.rejected.items())),
            **self.extra,
        }

    def write(self, path: Path, runtime: Path | None = None) -> None:
        """The metrics to ``path``; runtime figures to ``runtime`` (default: runtime_path)."""
        write_json(path, self.to_dict())
        self.write_runtime(runtime or runtime_path(path))

    def write_runtime(self, path: Path) -> None:
        if self.runtime:
            write_json(path, {"stage": self.stage, **self.runtime})

    def summary(self) -> str:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.rejected.items())) or "none"
        if self.extra.get("dry_run"):  # nothing was decoded yet: planned, not kept
            line = f"{self.stage} (dry run): {self.n_in} in, {self.n_kept} planned, "
        else:
            line = f"{self.stage}: {self.n_in} in, {self.n_kept} kept, "
        line += f"rejected: {reasons}"
        if self.runtime:
            line += "; run: " + ", ".join(f"{k}={v}" for k, v in self.runtime.items())
        if empty := self.extra.get("empty_classes"):  # no file, so in no manifest: say so
            line += f"\nwarning: empty class folder(s), in no output: {', '.join(empty)}"
        return line
