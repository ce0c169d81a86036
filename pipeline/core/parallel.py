"""An ordered, chunked process-pool map with a progress bar.

Workers are long-lived for the whole map (heavy imports such as torch, pulled
in by albumentations, are paid once per worker, not per item) and results come
back in input order, so outputs never depend on scheduling.

Workers never outlive the process that started them: a parent killed with SIGKILL
cannot shut its pool down, and orphaned workers would keep writing files and then
block forever on the result pipe. On Linux the kernel kills each worker when its
parent dies (PR_SET_PDEATHSIG); everywhere, a watcher thread in each worker exits
when its parent process changes.
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from typing import Any, TypeVar

from pipeline.core.engines import current_engine, ray_map
from pipeline.core.progress import Progress

T = TypeVar("T")
R = TypeVar("R")


def resolve_workers(workers: int) -> int:
    """0 means one per usable CPU core."""
    if workers > 0:
        return workers
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS
        return max(1, os.cpu_count() or 1)


_STATE: dict[str, Any] = {}  # this process's state, built once by the map's ``setup``


def parallel_map(
    fn: Callable[..., R],
    items: Sequence[T],
    workers: int = 0,
    desc: str = "",
    setup: Callable[[], Any] | None = None,
    chunksize: int | None = None,
    unit: str = "images",
    weight: Callable[[T], int] | None = None,
    spread: bool = True,
) -> Iterator[R]:
    """Yield ``fn(item)`` for each item, in order; in-process when one worker suffices.

    With ``setup``, each process builds its state once (a model, a recipe) and every call
    is ``fn(state, item)``: the one way a stage keeps per-process state. ``setup`` and
    ``fn`` must be module-level callables (or partials of them) to reach worker processes.
    Progress counts ``unit``s: each item is ``weight(item)`` of them (1 by default), so a
    batch of 32 crops counts 32 crops, not one batch.
    With the ray engine (``engines``) the map runs on a Ray cluster, one task per CPU there,
    unless ``spread`` is False (work that needs this machine, e.g. its GPU).
    """
    workers = min(resolve_workers(workers), max(1, len(items)))
    sizes = [weight(item) if weight else 1 for item in items]
    call = fn if setup is None else partial(_with_state, fn)
    with Progress(sum(sizes), desc, unit) as progress:
        if spread and current_engine() == "ray":
            for result, size in zip(ray_map(fn, items, setup, chunksize), sizes, strict=True):
                yield result
                progress.update(size)
            return
        if workers == 1:
            _build_state(setup)
            for item, size in zip(items, sizes, strict=True):
                yield call(item)
                progress.update(size)
            return
        chunksize = chunksize or max(1, min(32, len(items) // (workers * 8)))
        context = mp.get_context("fork" if hasattr(os, "fork") else "spawn")
        init_args = (setup, os.getpid())
        with ProcessPoolExecutor(workers, context, _init_worker, init_args) as pool:
            for result, size in zip(pool.map(call, items, chunksize=chunksize), sizes, strict=True):
                yield result
                progress.update(size)


PARENT_POLL_S = 0.5  # how often a worker checks that its parent is still alive
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _init_worker(setup: Callable[[], Any] | None, parent: int) -> None:
    """A pool worker's first act: die with ``parent``, then build its state."""
    _die_with_parent(parent)
    _build_state(setup)


def _die_with_parent(parent: int) -> None:
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the watcher below still ends the worker, a poll later
    # The parent may have died before prctl ran; then this worker already has a new parent.
    if os.getppid() != parent:
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def _watch_parent(parent: int) -> None:
    """Exit at once when orphaned (re-parented): nobody will read this worker's results."""
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_S)
    os._exit(1)


def _build_state(setup: Callable[[], Any] | None) -> None:
    if setup is not None:
        _STATE["state"] = setup()


def _with_state(fn: Callable[..., R], item: Any) -> R:
    return fn(_STATE["state"], item)
