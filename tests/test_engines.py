"""The execution engine: local process pool or Ray, with the same bytes either way.

The Ray tests start a real two-node cluster on this machine, on loopback only, shared by the
module (a cluster takes seconds to start): ``ray start --head`` on 127.0.0.1 and a second node
joined with ``ray start --address``. Stages run as a user runs them, ``prep ... --engine ray``
in a subprocess (the driver), and their output folders are compared byte for byte, manifests
included, with the local engine's. Real photos: dlib's headshots and face_recognition's
photos (``demo/real_faces.py``), plus a truncated JPEG that both engines must reject.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import PHOTO_CACHE, require_photo_tarballs, tree_digest
from ray_cluster import Cluster, alive, loopback_cluster
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.core import engines
from pipeline.core.errors import UserError
from pipeline.core.files import divert_listed_writes, write_listed_file
from pipeline.core.parallel import parallel_map

WAIT_S = 90  # bound on every wait for a condition
RUN_S = 300  # bound on one stage run


@pytest.fixture(autouse=True)
def _engine_from_environment() -> Iterator[None]:
    """A command's --engine lasts for its process: reset it around each in-process test."""
    engines.select_engine(None)
    yield
    engines.select_engine(None)


# ------------------------------------------------------------------ choosing an engine


def test_engine_comes_from_the_flag_then_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREP_ENGINE", raising=False)
    assert engines.current_engine() == "local"
    monkeypatch.setenv("PREP_ENGINE", "Ray")
    assert engines.current_engine() == "ray"
    engines.select_engine("local")
    assert engines.current_engine() == "local"


def test_an_unknown_engine_is_a_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREP_ENGINE", "spark")
    with pytest.raises(UserError, match=r"PREP_ENGINE='spark'.*local, ray"):
        engines.current_engine()
    result = CliRunner().invoke(app, ["augment", "nowhere", "--engine", "dask"])
    assert result.exit_code == 2
    assert "--engine='dask'" in result.output


def test_without_ray_the_ray_engine_says_how_to_install_it(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails
    result = CliRunner().invoke(app, ["augment", "raw", "--out", "out", "--engine", "ray"])
    assert result.exit_code == 2
    assert "pip install 'fewshot-prep[ray]'" in result.output
    assert not Path("out").exists()  # refused before any work


def _write_two(state: str, item: int) -> int:
    write_listed_file(f"{state}{item}.bin", bytes([item]))
    return item


def test_local_engine_writes_in_place_and_a_diversion_collects_instead(in_tmp: Path) -> None:
    assert list(parallel_map(_write_two, [1, 2], 1, setup=lambda: "f")) == [1, 2]
    assert Path("f2.bin").read_bytes() == b"\x02"
    with divert_listed_writes() as writes:
        write_listed_file("g.bin", b"x")
    assert writes == [("g.bin", b"x")]
    assert not Path("g.bin").exists()


def test_a_worker_that_cannot_see_the_workspace_refuses_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path.parent)  # restored afterwards: the check moves into the folder
    (tmp_path / "params.yaml").write_text("a: 1\n")
    view = engines.workspace_view(tmp_path)
    engines.enter_workspace(str(tmp_path), view)  # the same folder: fine
    assert Path.cwd() == tmp_path
    os.utime(tmp_path / "params.yaml", ns=(0, 0))  # another copy of the project
    with pytest.raises(UserError, match=r"does not see the driver's workspace.*shared storage"):
        engines.enter_workspace(str(tmp_path), view)
    with pytest.raises(UserError, match="same path on every node"):
        engines.enter_workspace(str(tmp_path / "elsewhere"), view)


# ------------------------------------------------------------------ a two-node cluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    pytest.importorskip("ray", reason="the ray engine's tests need `pip install ray`")
    with loopback_cluster(nodes=2, cpus=1) as started:
        yield started


# ------------------------------------------------------------------ stages on the cluster


@dataclass(frozen=True)
class Photos:
    base: Path  # raw/ and faces_raw/; each run works in a folder of its own with copies
    augment_local: dict[str, str]  # the local engine's augment output, path -> sha256

    def workdir(self, name: str) -> Path:
        """A working directory with the inputs: runs into ``out`` there compare byte for
        byte with the local run's ``out`` (manifest paths are relative to it)."""
        work = self.base / name
        for inputs in ("raw", "faces_raw"):
            shutil.copytree(self.base / inputs, work / inputs)
        return work


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Photos:
    """Real photos: raw/ (55 headshots + a truncated JPEG) and faces_raw/ (one person's 11
    headshots + that JPEG, and a photo whose face is cut off); augment --factor 8 on raw/,
    locally."""
    from demo.real_faces import write_real_faces

    require_photo_tarballs("dlib", "face_recognition")
    base = tmp_path_factory.mktemp("engines")
    every = base / "every"
    write_real_faces(every, PHOTO_CACHE, with_faults=True)
    shutil.copytree(every, base / "raw", ignore=shutil.ignore_patterns("Barack_Obama"))
    first = sorted((base / "raw" / "John_Simm").iterdir())[0]
    (base / "raw" / "John_Simm" / "truncated.jpg").write_bytes(first.read_bytes()[:3000])
    shutil.copytree(base / "raw" / "John_Simm", base / "faces_raw" / "John_Simm")
    (base / "faces_raw" / "Barack_Obama").mkdir()
    shutil.copy(every / "Barack_Obama" / "cut_off_left.jpg", base / "faces_raw" / "Barack_Obama")
    shutil.rmtree(every)
    photos = Photos(base, {})
    local = photos.workdir("local")
    _prep_here(local, "augment", "raw", "--out", "out", "--factor", "8", "--engine", "local")
    return Photos(base, tree_digest(local / "out"))


def _prep_here(base: Path, *args: str) -> None:
    """A command in this process, with ``base`` as the working directory."""
    from pipeline.components.detectors import torch_threads

    before = Path.cwd()
    os.chdir(base)
    try:
        with torch_threads(1):  # the machine is shared
            result = CliRunner().invoke(app, list(args))
    finally:
        os.chdir(before)
        engines.select_engine(None)
    assert result.exit_code == 0, result.output


# `python -m pipeline.cli` with Ctrl-C raising KeyboardInterrupt, as in a user's terminal,
# whatever this process inherited: a job started in the background (nohup, a CI runner)
# ignores SIGINT, and every process it starts inherits that.
_AS_IN_A_TERMINAL = (
    "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.argv[0] = 'prep'; runpy.run_module('pipeline.cli', run_name='__main__')"
)


def _prep(cluster: Cluster, base: Path, *args: str) -> subprocess.Popen[str]:
    """`prep ...` as a user runs it, a driver of the cluster (PREP_ENGINE=ray)."""
    command = [sys.executable, "-c", _AS_IN_A_TERMINAL, *args]
    return subprocess.Popen(command, cwd=base, env=cluster.env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip


def _finish(run: subprocess.Popen[str]) -> tuple[int, str]:
    output, _ = run.communicate(timeout=RUN_S)
    return run.returncode, output


def test_augment_on_two_nodes_gives_the_local_bytes(cluster: Cluster, photos: Photos) -> None:
    """`PREP_ENGINE=ray prep augment --factor 8 raw --out out` = the local run, byte for byte."""
    work = photos.workdir("ray")
    code, output = _finish(_prep(cluster, work, "augment", "raw", "--out", "out", "--factor", "8"))
    assert code == 0, output
    assert "on 2 nodes" in output  # both nodes did part of the work
    assert tree_digest(work / "out") == photos.augment_local  # manifests included
    assert len(photos.augment_local) == 55 * 8 + 3  # + manifest, rejects, folder marker
    rejects = (work / "out" / "rejects.csv").read_text()
    assert "truncated.jpg" in rejects and "unreadable" in rejects  # a reject, as locally


def test_detect_on_two_nodes_gives_the_local_bytes(cluster: Cluster, photos: Photos) -> None:
    local, work = photos.workdir("detect_local"), photos.workdir("detect_ray")
    args = ("detect", "faces_raw", "--out", "out", "--report", "detect.json", "-s", "batch_size=4")
    _prep_here(local, *args)  # 4 batches: work for both nodes
    code, output = _finish(_prep(cluster, work, *args))
    assert code == 0, output
    assert "on 2 nodes" in output
    assert tree_digest(work / "out") == tree_digest(local / "out")
    rejects = (work / "out" / "rejects.csv").read_text()
    assert "truncated_face" in rejects and "unreadable" in rejects
    assert len(tree_digest(local / "out")) == 11 + 3


def test_ctrl_c_leaves_an_unfinished_folder_and_a_rerun_survives_a_killed_worker(
    cluster: Cluster, photos: Photos
) -> None:
    """Interrupted, the folder has no manifest; the rerun finishes it although one of its
    workers is killed mid-task (Ray reruns the task), with the local run's bytes."""
    work = photos.workdir("stopped")
    run = _prep(cluster, work, "augment", "raw", "--out", "out", "--factor", "8")
    assert _wait_for(lambda: bool(cluster.workers(busy=True)) or run.poll() is not None)
    assert run.poll() is None, "the run ended before it could be interrupted"
    run.send_signal(signal.SIGINT)
    code, output = _finish(run)
    assert code != 0, output
    assert not (work / "out" / "manifest.csv").exists()  # unfinished, as locally
    assert _wait_for(lambda: not cluster.workers(busy=True))  # its tasks were cancelled

    rerun = _prep(cluster, work, "augment", "raw", "--out", "out", "--factor", "8")
    killed = _kill_a_busy_worker(cluster, rerun)
    code, output = _finish(rerun)
    assert killed is not None, f"no worker was seen busy before the run ended:\n{output}"
    assert code == 0, output
    assert not alive(killed)
    assert tree_digest(work / "out") == photos.augment_local


def _kill_a_busy_worker(cluster: Cluster, run: subprocess.Popen[str]) -> int | None:
    deadline = time.monotonic() + RUN_S
    while run.poll() is None and time.monotonic() < deadline:
        busy = cluster.workers(busy=True)
        if busy:
            os.kill(busy[0], signal.SIGKILL)
            return busy[0]
        time.sleep(0.01)
    return None


def _wait_for(condition: object) -> bool:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False
