"""Where ``parallel_map``'s work runs: this machine's process pool, or a Ray cluster.

The engine is chosen per run (``--engine`` or ``PREP_ENGINE``), never in params.yaml:
results do not depend on it, so DVC must not rerun a stage when it changes. ``local``
(the default) is the ordered process pool in ``parallel.py``; ``ray`` sends the same
function, the same ``setup`` and the same items, in chunks, to Ray tasks:

- ``ray.init()`` without an address: Ray uses ``RAY_ADDRESS`` when set (a cluster),
  else starts an instance on this machine.
- Each Ray worker process builds the map's state once with ``setup`` and keeps it for
  every chunk it runs (a model is loaded once per worker, not per chunk).
- The files a function writes with ``files.write_listed_file`` are not written on the
  worker: they come back with its result and the driver writes them, in input order,
  so every output lands in the driver's workspace, beside the manifest DVC tracks.
- Inputs are read on the workers at the paths the driver sees: the workspace must be
  shared storage mounted at the same path on every node (each worker checks, and says
  so clearly when it is not).
- A worker lost mid-task (killed, node gone) has its task rerun, at most
  ``MAX_RETRIES`` times; an exception raised by the work itself is not retried.
- Interrupted (Ctrl-C), the driver cancels its tasks and writes nothing more: the
  folder is left as an interrupted local run leaves it, without a manifest.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, cast, get_args

from pipeline.core.errors import UserError
from pipeline.core.files import divert_listed_writes, write_listed_file

T = TypeVar("T")
R = TypeVar("R")

Engine = Literal["local", "ray"]
ENGINES: tuple[str, ...] = get_args(Engine)
ENV_VAR = "PREP_ENGINE"
MAX_RETRIES = 3  # reruns of a task whose worker died; bounded, so a crashing input ends the run
IN_FLIGHT_PER_CPU = 4  # chunks queued per cluster CPU: busy workers, bounded driver memory
INSTALL_HINT = "pip install 'fewshot-prep[ray]'"
Writes = list[tuple[str, bytes]]  # (path, bytes) a task wrote with write_listed_file

_chosen: Engine | None = None  # set by the CLI's --engine; wins over the environment


def select_engine(name: str | None) -> None:
    """``--engine``: use ``name`` for this process (None: leave it to ``PREP_ENGINE``)."""
    global _chosen
    _chosen = None if name is None else _checked(name, "--engine")


def current_engine() -> Engine:
    """The engine of this run: ``--engine``, else ``PREP_ENGINE``, else local."""
    if _chosen is not None:
        return _chosen
    return _checked(os.environ.get(ENV_VAR, "") or "local", ENV_VAR)


def _checked(name: str, origin: str) -> Engine:
    value = name.strip().lower()
    if value not in ENGINES:
        raise UserError(f"{origin}={name!r}: the engine is one of {', '.join(ENGINES)}")
    return cast(Engine, value)


def import_ray() -> Any:
    """Ray, or a UserError that says how to install it (an optional extra)."""
    try:
        import ray
    except ImportError:
        raise UserError(f"the ray engine needs Ray: {INSTALL_HINT}") from None
    return ray


def connect() -> Any:
    """Ray, connected: to ``RAY_ADDRESS`` when set, else to a new instance on this machine."""
    ray = import_ray()
    if not ray.is_initialized():
        # No address: Ray's own convention picks RAY_ADDRESS, else starts a local instance.
        ray.init(log_to_driver=False, configure_logging=False)
    return ray


# --- the driver -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Map:
    """What every task of one map shares (sent once, through Ray's object store)."""

    fn: Callable[..., Any]
    setup: Callable[[], Any] | None
    key: str  # names this map's state in a worker process
    cwd: str  # the driver's working directory: item paths are relative to it
    workspace: tuple[tuple[str, int, int], ...]  # the driver's view of cwd, to compare


def ray_map(
    fn: Callable[..., R],
    items: Sequence[T],
    setup: Callable[[], Any] | None = None,
    chunksize: int | None = None,
) -> Iterator[R]:
    """Yield ``fn(item)`` (``fn(state, item)`` with ``setup``) for each item, in order, on Ray."""
    if not items:
        return
    ray = connect()
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    size = chunksize or max(1, min(32, len(items) // (cpus * 8)))
    chunks = [list(items[i : i + size]) for i in range(0, len(items), size)]
    cwd = Path.cwd()
    shared = ray.put(_Map(fn, setup, uuid.uuid4().hex, str(cwd), workspace_view(cwd)))
    task = ray.remote(num_cpus=1, max_retries=MAX_RETRIES, retry_exceptions=False)(_run_chunk)
    pending: deque[Any] = deque()
    nodes: set[str] = set()
    try:
        for chunk in chunks:
            pending.append(task.remote(shared, chunk))
            if len(pending) >= cpus * IN_FLIGHT_PER_CPU:
                yield from _deliver(ray.get(pending.popleft()), nodes)
        while pending:
            yield from _deliver(ray.get(pending.popleft()), nodes)
    finally:
        for ref in pending:  # Ctrl-C, an error, or the caller stopped early
            ray.cancel(ref, force=True)
    print(f"ray: {len(chunks)} tasks on {len(nodes)} nodes", file=sys.stderr, flush=True)


def _deliver(done: tuple[str, list[tuple[Any, Writes]]], nodes: set[str]) -> Iterator[Any]:
    """Write a chunk's files here, in the driver's workspace, then yield its results."""
    node, results = done
    nodes.add(node)
    for value, writes in results:
        for path, data in writes:
            write_listed_file(path, data)
        yield value


def workspace_view(cwd: Path) -> tuple[tuple[str, int, int], ...]:
    """The folder's entries: (name, size, mtime) for files, (name, -1, -1) for the rest.

    Another copy of the project (a clone on each node) has the same names but other
    times; the same files on shared storage match. Entries the run adds later (its
    output folder) are not in the driver's view, so they cannot make the views differ.
    """
    view = []
    for entry in sorted(os.scandir(cwd), key=lambda e: e.name):
        if entry.is_file(follow_symlinks=False):
            stat = entry.stat(follow_symlinks=False)
            view.append((entry.name, stat.st_size, stat.st_mtime_ns))
        else:
            view.append((entry.name, -1, -1))
    return tuple(view)


# --- a Ray worker process -----------------------------------------------------------

_STATE: dict[str, Any] = {}  # {"key": the map's key, "state": what its setup built}


def _run_chunk(shared: _Map, chunk: list[Any]) -> tuple[str, list[tuple[Any, Writes]]]:
    """Run the map's function on one chunk: (this node, each result with the files it wrote)."""
    import ray

    state = _state_of(shared)
    results = []
    for item in chunk:
        with divert_listed_writes() as writes:
            value = shared.fn(item) if shared.setup is None else shared.fn(state, item)
        results.append((value, writes))
    return ray.get_runtime_context().get_node_id(), results


def _state_of(shared: _Map) -> Any:
    """In the driver's folder, the map's state, both set up on this process's first chunk
    of the map (the previous map's state dropped). The folder is checked once, not on every
    chunk: a file edited there during a long run must not stop it."""
    if _STATE.get("key") != shared.key:
        _STATE.clear()
        enter_workspace(shared.cwd, shared.workspace)
        _STATE.update(key=shared.key, state=None if shared.setup is None else shared.setup())
    else:
        os.chdir(shared.cwd)  # a task of another map may have moved this process
    return _STATE["state"]


def enter_workspace(folder: str, view: tuple[tuple[str, int, int], ...]) -> None:
    """Work where the driver works, and fail clearly when this node cannot see it."""
    cwd = Path(folder)
    if cwd.is_dir():
        mine = {name: (size, mtime) for name, size, mtime in workspace_view(cwd)}
        if all(mine.get(name) == (size, mtime) for name, size, mtime in view):
            os.chdir(cwd)
            return
    raise UserError(
        f"this Ray worker ({os.uname().nodename}) does not see the driver's workspace "
        f"{cwd}: the ray engine reads inputs where the driver does, so mount the workspace "
        "at the same path on every node (shared storage); outputs come back to the driver"
    )
