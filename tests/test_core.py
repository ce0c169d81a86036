from pathlib import Path

import pytest

from pipeline.core.errors import UserError
from pipeline.core.files import (
    atomic_write_bytes,
    prepare_output_dir,
    remove_unlisted_files,
    write_listed_file,
)
from pipeline.core.manifest import read_manifest, scan_image_folder, to_posix, write_manifest
from pipeline.core.parallel import parallel_map
from pipeline.core.registry import Registry, UnknownNameError
from pipeline.core.seeds import derive_seed


def _square(x: int) -> int:
    return x * x


def test_scan_accounts_for_every_file(make_image_folder, in_tmp: Path) -> None:
    root = make_image_folder(classes=2, per_class=2)
    (root / "stray.jpg").write_bytes(b"x")  # not in a class folder
    (root / "class0" / "naïve name.jpg").write_bytes(b"y")
    outside = in_tmp / "secret.jpg"
    outside.write_bytes(b"z")
    (root / "class1" / "link.jpg").symlink_to(outside)
    rows, rejects = scan_image_folder(root)
    reasons = {Path(r.row.path).name: r.reason for r in rejects}
    assert reasons == {"stray.jpg": "no_class", "link.jpg": "outside_root"}
    assert len(rows) == 5
    assert all(len(r.sha256) == 64 and r.label.startswith("class") for r in rows)
    assert all(not r.path.startswith("/") for r in rows)  # relative to the working dir


def test_manifest_roundtrip_keeps_canonical_column_order(tmp_path: Path) -> None:
    rows = [{"zzz": "1", "label": "a", "path": "p.jpg"}, {"path": "q.jpg", "label": "b"}]
    write_manifest(tmp_path / "m.csv", rows)
    header = (tmp_path / "m.csv").read_text().splitlines()[0]
    assert header == "path,label,zzz"
    assert read_manifest(tmp_path / "m.csv")[1] == {"path": "q.jpg", "label": "b", "zzz": ""}


def test_to_posix_is_relative_inside_cwd(in_tmp: Path) -> None:
    assert to_posix(in_tmp / "a" / "b.jpg") == "a/b.jpg"
    assert to_posix(Path("/")) == "/"


def test_atomic_write_leaves_no_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"

    atomic_write_bytes(target, b"old")
    with pytest.raises(TypeError):  # the write fails half-way through
        atomic_write_bytes(target, object())  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_atomic_writes_get_ordinary_permissions(tmp_path: Path) -> None:
    atomic_write_bytes(tmp_path / "f.bin", b"x")
    assert (tmp_path / "f.bin").stat().st_mode & 0o044 == 0o044  # group/others may read


def test_listed_files_are_created_with_their_folder_and_ordinary_permissions(
    tmp_path: Path,
) -> None:
    target = tmp_path / "class0" / "a_00.jpg"
    write_listed_file(str(target), b"new")
    assert target.read_bytes() == b"new"
    assert target.stat().st_mode & 0o044 == 0o044
    assert [p.name for p in target.parent.iterdir()] == ["a_00.jpg"]  # no temp file on the way


def test_a_listed_file_that_exists_is_replaced_never_modified(tmp_path: Path) -> None:
    """A DVC cache hardlink to the old output must keep the old bytes."""
    target, cache_link = tmp_path / "a_00.jpg", tmp_path / "cache_copy"
    target.write_bytes(b"old")
    cache_link.hardlink_to(target)
    write_listed_file(target, b"new")
    assert target.read_bytes() == b"new"
    assert cache_link.read_bytes() == b"old"
    with pytest.raises(TypeError):  # a failed rewrite keeps the complete old file
        write_listed_file(target, object())  # type: ignore[arg-type]
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_00.jpg", "cache_copy"]


def test_a_failed_new_listed_file_is_removed(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        write_listed_file(tmp_path / "a_00.jpg", object())  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_prepare_output_dir_refuses_a_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("user data")
    with pytest.raises(UserError, match="not written by prep"):
        prepare_output_dir(tmp_path)
    (tmp_path / "manifest.csv").write_text("path\n")
    (tmp_path / ".x.jpg.123.tmp").write_text("half")
    assert prepare_output_dir(tmp_path) is True  # earlier outputs: the stage may sweep them
    assert not (tmp_path / ".x.jpg.123.tmp").exists()
    assert not (tmp_path / "manifest.csv").exists()  # present again only once a run completes


def test_an_interrupted_first_run_can_be_finished(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert prepare_output_dir(out) is False
    (out / "half-done.jpg").write_bytes(b"x")  # interrupted before its manifest was written
    assert prepare_output_dir(out) is True


def test_remove_unlisted_files_keeps_listed_and_other_suffixes(tmp_path: Path) -> None:
    for name in ("a.jpg", "b.jpg", "notes.txt"):
        (tmp_path / name).write_text(name)
    assert remove_unlisted_files(tmp_path, {tmp_path / "a.jpg"}, {".jpg"}) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jpg", "notes.txt"]


def test_registry_lists_filters_and_explains_unknown_names() -> None:
    registry: Registry[object] = Registry("widget")
    registry.register("alpha", help="first")(object)
    registry.register("beta")(dict)
    assert registry.names() == ["alpha", "beta"]
    assert registry.names("a*") == ["alpha"]
    assert registry.get("beta") is dict
    with pytest.raises(UnknownNameError, match="known: alpha, beta"):
        registry.get("gamma")
    with pytest.raises(ValueError, match="twice"):
        registry.register("alpha")(object)


@pytest.mark.parametrize("workers", [1, 2])
def test_parallel_map_keeps_input_order(workers: int) -> None:
    items = list(range(50))
    assert list(parallel_map(_square, items, workers)) == [x * x for x in items]


def test_derived_seeds_are_stable_and_distinct() -> None:
    assert derive_seed(0, "abc", 1) == derive_seed(0, "abc", 1)
    seeds = {derive_seed(s, k, i) for s in (0, 1) for k in ("a", "b") for i in range(4)}
    assert len(seeds) == 16
    assert all(0 <= s < 2**32 for s in seeds)


def _length(items: list[int]) -> int:
    return len(items)


def test_parallel_map_progress_counts_units_not_batches(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Off a terminal (as in CI logs) progress is plain lines; batches count their items."""
    from pipeline.core import progress

    monkeypatch.setattr(progress, "LOG_EVERY", 0.0)  # a line after every batch
    batches = [[1, 2], [3], [4, 5, 6]]
    assert list(parallel_map(_length, batches, 1, "embed", unit="crops", weight=len)) == [2, 1, 3]
    lines = capsys.readouterr().err.strip().splitlines()
    assert [line.split(" (")[0].split(" crops")[0] for line in lines] == [
        "embed: 2/6", "embed: 3/6", "embed: 6/6",
    ]  # fmt: skip
