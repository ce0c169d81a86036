"""One bad image never stops a run: per-item failures become data, not crashes.

A stage's per-image work (a detector batch, a recipe, an embedder call) can raise on an
input nobody foresaw, e.g. albumentations' HSV shift on a 1x1 picture. The stage catches
the error for that image alone and rejects it with ``Reason.PROCESSING_FAILED`` and
``failure_detail(err)``; the other images carry on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from pipeline.core.errors import UserError

T = TypeVar("T")
R = TypeVar("R")

MAX_DETAIL = 300  # characters of the error kept in a rejects row


def failure_detail(err: BaseException) -> str:
    """The error as one line for a rejects row's ``detail``: its type and message."""
    message = " ".join(str(err).split())
    detail = f"{type(err).__name__}: {message}" if message else type(err).__name__
    return detail if len(detail) <= MAX_DETAIL else detail[: MAX_DETAIL - 3] + "..."


def batch_or_each(fn: Callable[[Sequence[T]], list[R]], items: Sequence[T]) -> list[R | Exception]:
    """``fn(items)``; when the batch call raises, ``fn([item])`` for each item alone, so that
    only the items that fail by themselves come back as their exception.

    A ``UserError`` (a missing model, a bad setting) is about the run, not an image: it
    propagates.
    """
    try:
        return list(fn(items))
    except UserError:
        raise
    except Exception as err:
        if len(items) == 1:
            return [err]
    return [_alone(fn, item) for item in items]


def _alone(fn: Callable[[Sequence[T]], list[R]], item: T) -> R | Exception:
    try:
        return fn([item])[0]
    except UserError:
        raise
    except Exception as err:  # that one image fails, not the run
        return err
