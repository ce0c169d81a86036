"""Pool workers die with their parent: SIGKILL the process that runs parallel_map.

A killed parent cannot shut its pool down; workers left behind kept writing outputs and then
blocked forever on the result pipe (issue 16). Here a real run is started in a subprocess, its
workers are seen working, the parent is SIGKILLed, and every worker must be gone in seconds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork and POSIX signals")

# Each item sleeps, so the run lasts ~10 s; every result is printed (the worker's pid) at once.
SCRIPT = """
import os, sys, time
from pipeline.core.parallel import parallel_map

def work(item):
    time.sleep(0.1)
    return os.getpid()

if __name__ == "__main__":
    for pid in parallel_map(work, list(range(200)), workers=2, chunksize=1):
        print(pid, flush=True)
"""


def _alive(pid: int) -> bool:
    """Running, and not a zombie waiting for a reaper (a zombie does no work)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return "\nState:\tZ" not in status


def _worker_pids(proc: subprocess.Popen[str], want: int, timeout: float) -> set[int]:
    """The distinct pids the run reports, once ``want`` of them have done some work."""
    assert proc.stdout is not None
    seen: set[int] = set()
    deadline = time.monotonic() + timeout
    while len(seen) < want and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.add(int(line))
    return seen


def test_workers_end_when_the_parent_is_killed(tmp_path: Path) -> None:
    script = tmp_path / "run_pool.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env, cwd=tmp_path
    )
    workers: set[int] = set()
    try:
        workers = _worker_pids(proc, want=2, timeout=60)
        assert len(workers) == 2 and proc.pid not in workers, workers
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 5
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = [pid for pid in workers if _alive(pid)]
        assert not left, f"workers {left} outlived their killed parent"
    finally:  # clean up after a failure: nothing of this test keeps running
        proc.kill()
        for pid in workers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
