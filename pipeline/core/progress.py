"""Progress for long work, on a terminal and in a log alike.

On a terminal: a tqdm bar. Anywhere else (a CI log, ``dvc repro > log``) a bar is either
noise or, with tqdm's ``disable=None``, nothing at all; there, one plain line is printed at
most every ``LOG_EVERY`` seconds, and one at the end:

    features: 96/240 images (40%) 12.3 s
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, TypeVar

from tqdm import tqdm

T = TypeVar("T")
LOG_EVERY = 10.0  # seconds between plain progress lines


class Progress:
    """Counts ``total`` units of work; ``update(n)`` after each piece is done."""

    def __init__(
        self, total: int, desc: str, unit: str, stream: IO[str] | None = None, end_line: bool = True
    ) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.end_line = end_line  # False: the caller prints its own line when done
        self.stream = stream or sys.stderr
        self.done = 0
        self.started = self._last = time.perf_counter()
        self._bar = (
            tqdm(total=total, desc=desc, unit=unit, leave=False, file=self.stream)
            if _is_terminal(self.stream)
            else None
        )

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif time.perf_counter() - self._last >= LOG_EVERY and self.done < self.total:
            self._line()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.total and self.end_line:
            self._line()

    def _line(self) -> None:
        self._last = time.perf_counter()
        share = f" ({self.done / self.total:.0%})" if self.total else ""
        elapsed = self._last - self.started
        print(f"{self.desc}: {self.done}/{self.total} {self.unit}{share} {elapsed:.1f} s",
              file=self.stream, flush=True)  # fmt: skip

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def track(
    items: Iterable[T],
    total: int,
    desc: str,
    unit: str,
    weight: Callable[[T], int] | None = None,
    end_line: bool = True,
) -> Iterator[T]:
    """Yield ``items``, counting each as ``weight(item)`` units (1 by default) once it is done."""
    with Progress(total, desc, unit, end_line=end_line) as progress:
        for item in items:
            yield item
            progress.update(weight(item) if weight else 1)


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
