"""Stage summaries: counts in, kept and rejected by reason, written as DVC metrics."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.files import atomic_write_text
from pipeline.manifest import Row


@dataclass
class StageReport:
    stage: str
    n_in: int = 0
    n_kept: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_rows(
        cls, stage: str, n_in: int, kept: list[Row], rejects: list[Row], **extra: Any
    ) -> StageReport:
        reasons = Counter(r["reason"] for r in rejects)
        return cls(stage, n_in, len(kept), reasons, dict(extra))

    @property
    def n_rejected(self) -> int:
        return sum(self.rejected.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "in": self.n_in,
            "kept": self.n_kept,
            "rejected": self.n_rejected,
            "rejected_by_reason": dict(sorted(self.rejected.items())),
            **self.extra,
        }

    def write(self, path: Path) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")

    def summary(self) -> str:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.rejected.items())) or "none"
        return f"{self.stage}: {self.n_in} in, {self.n_kept} kept, rejected: {reasons}"
