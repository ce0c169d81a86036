"""A Ray cluster of N nodes on this machine, on loopback only, for tests and benchmarks.

Each node is ``ray start --block`` in a session of its own; stopping sends it SIGTERM (it
stops the processes it started), then SIGKILL to its process group if it has not exited, and
SIGKILL, by id, to any worker seen earlier that outlived its raylet. Every wait is bounded.

``ray start`` turns 127.0.0.1 into this machine's network address (its
``resolve_ip_for_localhost``), and its servers then listen on every interface. The head keeps
127.0.0.1 with Ray's switch for single-machine clusters; the other nodes, which that switch
would refuse, are started with the same rewrite turned off, so every server listens on
loopback only. A driver needs ``Cluster.env()`` (RAY_ADDRESS and that switch).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

STARTUP_S = 90  # bound on a node's start
JOIN = (
    "import sys, ray._private.services as s; s.resolve_ip_for_localhost = lambda host: host; "
    "from ray.scripts.scripts import main; sys.argv[0] = 'ray'; main()"
)
LOOPBACK_ONLY = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
JOINING = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1", "RAY_USAGE_STATS_ENABLED": "0"}


@dataclass
class Cluster:
    address: str
    temp_dir: Path
    nodes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    seen_workers: set[int] = field(default_factory=set)
    # Ray's token authentication with a token of this cluster's own: nothing read from or
    # written to ~/.ray (where a token, once there, would switch a head to token mode)
    auth: dict[str, str] = field(
        default_factory=lambda: {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    )

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a `prep` driver on this cluster."""
        return {**os.environ, **LOOPBACK_ONLY, **self.auth, "RAY_ADDRESS": self.address,
                "PREP_ENGINE": "ray", **extra}  # fmt: skip

    def workers(self, busy: bool = False) -> list[int]:
        """Ray worker processes of this cluster's raylets (busy: running a map's chunk)."""
        groups = {node.pid for node in self.nodes}
        raylets = {pid for pid in pids() if pgid(pid) in groups and "raylet/raylet" in cmdline(pid)}
        found = []
        for pid in pids():
            line = cmdline(pid)
            if ppid(pid) in raylets and line.startswith("ray::") and "Agent" not in line:
                self.seen_workers.add(pid)
                if not busy or line.startswith("ray::_run_chunk"):
                    found.append(pid)
        return found


@contextmanager
def loopback_cluster(nodes: int = 2, cpus: int = 1) -> Iterator[Cluster]:
    """``nodes`` Ray nodes of ``cpus`` CPUs each, all on 127.0.0.1; stopped on exit."""
    temp = Path(tempfile.mkdtemp(prefix="prep-ray-", dir="/tmp"))  # short: socket paths
    cluster = Cluster(f"127.0.0.1:{free_port()}", temp)
    common = ["--block", "--node-ip-address=127.0.0.1", f"--num-cpus={cpus}",
              "--object-store-memory=100000000", "--disable-usage-stats"]  # fmt: skip
    ray_cli = str(Path(sys.executable).with_name("ray"))
    try:
        head = [ray_cli, "start", "--head", f"--port={cluster.address.rsplit(':', 1)[1]}",
                "--include-dashboard=false", f"--temp-dir={temp}", *common]  # fmt: skip
        _start(cluster, head, temp / "node0.log", LOOPBACK_ONLY)
        for n in range(1, nodes):
            join = [sys.executable, "-c", JOIN, "start", f"--address={cluster.address}", *common]
            _start(cluster, join, temp / f"node{n}.log", JOINING)
        yield cluster
    finally:
        _stop(cluster)


def _start(cluster: Cluster, command: list[str], log: Path, extra: dict[str, str]) -> None:
    env = {**os.environ, **extra, **cluster.auth}
    with log.open("wb") as out:  # its own session: the node's processes are one group
        node = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)  # fmt: skip
    cluster.nodes.append(node)
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline and node.poll() is None:
        if "Ray runtime started" in log.read_text(errors="replace"):
            return
        time.sleep(0.2)
    raise RuntimeError(f"a Ray node did not start:\n{log.read_text(errors='replace')[-3000:]}")


def _stop(cluster: Cluster) -> None:
    cluster.workers()  # note the workers before their raylets go
    for node in reversed(cluster.nodes):
        node.terminate()
    for node in cluster.nodes:
        try:
            node.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(node.pid, signal.SIGKILL)
            node.wait(timeout=10)
    deadline = time.monotonic() + 10
    while (left := [p for p in cluster.seen_workers if alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in left:  # workers have sessions of their own; they normally follow their raylet
        os.kill(pid, signal.SIGKILL)
    shutil.rmtree(cluster.temp_dir, ignore_errors=True)


# --- processes, by id ---------------------------------------------------------------


def pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _stat(pid: int) -> list[str]:
    """/proc/<pid>/stat after the command name: state, ppid, pgrp, ..."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return []


def ppid(pid: int) -> int:
    fields = _stat(pid)
    return int(fields[1]) if fields else -1


def pgid(pid: int) -> int:
    fields = _stat(pid)
    return int(fields[2]) if fields else -1


def alive(pid: int) -> bool:
    fields = _stat(pid)
    return bool(fields) and fields[0] != "Z"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
