"""A table on a full file system: the error says so, the leftovers are counted and removed, a re-run completes.

The file system is real and small: a 40 MB tmpfs mounted for the test (as root), else a 40 MB ext4 image on
a loop device. Without either (not root, no mount permission) the test with a file size limit
(``RLIMIT_FSIZE`` in a child process: writes fail with EFBIG) checks the error and the re-run; with none of
them it skips, saying why.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import lance
import pytest
from typer.testing import CliRunner

from mmfs_assets.cli.app import app
from mmfs_loader.contract import schema as S
from mmfs_loader.contract.health import check_table
from mmfs_loader.contract.table import TableRef

FS_MB = 40
FREE_FOR_DROP = 20_000_000  # the drop needs 28 MB: four 7 MB videos, each a dedicated blob sidecar
VIDEO_BYTES = 7_000_000


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True)


def _mount(where: Path, scratch: Path, why: list[str]) -> str | None:
    """Mount a small file system at ``where``: how (a phrase), or None with the reasons appended to ``why``."""
    where.mkdir()
    if os.geteuid() != 0:
        why.append("not root: cannot mount a small file system")
        return None
    r = _run(["mount", "-t", "tmpfs", "-o", f"size={FS_MB}m", "tmpfs", str(where)])
    if r.returncode == 0:
        return f"tmpfs of {FS_MB} MB"
    why.append(f"mount -t tmpfs: {r.stderr.strip() or r.returncode}")
    image = scratch / "fs.img"
    if shutil.which("mkfs.ext4") is None:
        why.append("no mkfs.ext4 for a loop device")
        return None
    with open(image, "wb") as f:
        f.truncate(FS_MB << 20)
    r = _run(["mkfs.ext4", "-q", "-F", "-m", "0", str(image)])
    if r.returncode == 0:
        r = _run(["mount", "-o", "loop", str(image), str(where)])
        if r.returncode == 0:
            return f"ext4 image of {FS_MB} MB on a loop device"
    why.append(f"loop device: {r.stderr.strip() or r.returncode}")
    return None


@pytest.fixture
def small_fs(tmp_path):
    """(mount point, how it was made), or (None, why none could be made)."""
    why: list[str] = []
    where = tmp_path / "small-fs"
    how = _mount(where, tmp_path, why)
    if how is None:
        yield None, "; ".join(why)
        return
    try:
        yield where, how
    finally:
        if _run(["umount", str(where)]).returncode != 0:
            _run(["umount", "-l", str(where)])


def _drop(env, name: str, sizes: list[int]) -> Path:
    d = Path(env.drop_dir) / name
    d.mkdir(parents=True)
    for i, n in enumerate(sizes):
        (d / f"v{i}.mp4").write_bytes(os.urandom(n))
    (d / "_READY").touch()
    return d


def _flat(text: str) -> str:
    """``text`` without whitespace: rich wraps long lines anywhere, paths included."""
    return "".join(text.split())


def _cli(*args: str):
    return CliRunner().invoke(app, list(args))


def test_full_disk_is_named_counted_cleaned_and_rerun(env, small_fs, monkeypatch, capsys):
    where, how = small_fs
    if where is None:
        pytest.skip(f"no small file system could be mounted ({how}); test_file_size_limit covers the error")
    uri = str(where / "videos.lance")
    monkeypatch.setenv("MMFS_TABLE_URI", uri)
    _drop(env, "small", [1_000_000])
    r = _cli("materialize", "--ephemeral", "-p", "small", "-s", "videos")
    assert r.exit_code == 0, r.output
    ballast = where / "ballast"  # something else fills the disk: 20 MB stay free for a 28 MB drop
    with open(ballast, "wb") as f:
        f.write(b"\0" * (shutil.disk_usage(where).free - FREE_FOR_DROP))
    _drop(env, "big", [VIDEO_BYTES] * 4)

    r = _cli("materialize", "--ephemeral", "-p", "big", "-s", "videos")
    assert r.exit_code == 1 and "Traceback" not in r.output
    text = _flat(r.output)
    assert _flat(f"error: videos failed for drop big: no space left on device on {uri} (") in text, r.output
    assert _flat("free): free space, then re-run; the partial files are orphans that `mmfs maintain` removes") in text
    assert "Dedicatedblobsidecar" not in text.split("error:", 1)[1]  # Lance's words only in the run's log

    # Lance often names the short write it noticed, not the cause: on a disk left (nearly) full it is the cause
    from mmfs_assets.table.append import NoSpaceError, no_space

    mismatch = OSError(f"LanceError(IO): Dedicated blob sidecar '{uri}/data/x/1.blob' has size 6901760, expected 7000000")
    assert isinstance(no_space(TableRef.of(uri), mismatch), NoSpaceError)

    h = check_table(uri)  # the failed write's blob sidecars are orphans, counted with their bytes
    assert h.orphan_blob_files and h.orphan_blob_files >= 1 and h.orphan_bytes and h.orphan_bytes >= VIDEO_BYTES
    assert h.orphan_data_files == 0
    r = _cli("status")
    assert r.exit_code == 0, r.output
    expected = f"orphan data files: 0, blob sidecars: {h.orphan_blob_files} ({h.orphan_bytes / 1e6:.1f} MB;"
    assert _flat(expected) in _flat(r.output), r.output
    r = _cli("maintain", "--format", "json")  # at once: they might belong to a commit in flight, kept and said
    assert r.exit_code == 0, r.output
    young = json.loads(r.stdout)
    assert young["orphans_removed"] == 0 and any("younger than 1:00:00: kept" in s for s in young["skipped"])
    data = Path(uri) / "data"
    old = time.time() - 7200  # past maintenance's grace period
    for p in data.rglob("*"):
        os.utime(p, (old, old))
    r = _cli("maintain", "--format", "json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["orphans_removed"] == h.orphan_blob_files and rep["orphan_bytes"] == h.orphan_bytes
    after = check_table(uri)
    assert after.orphan_files == 0 and after.orphan_bytes == 0
    live = {Path(f.path).stem for frag in lance.dataset(uri).get_fragments() for f in frag.data_files()}
    assert {p.name for p in data.iterdir() if p.is_dir()} <= live  # no emptied sidecar folder left behind

    ballast.unlink()  # space freed: the re-run completes
    r = _cli("materialize", "--ephemeral", "-p", "big", "-s", "videos")
    assert r.exit_code == 0, r.output
    t = lance.dataset(uri).to_table(columns=[S.DROP_ID])
    assert sorted(t[S.DROP_ID].to_pylist()) == ["big"] * 4 + ["small"]
    with capsys.disabled():
        print(f"\n[full disk: {how}] orphan blob sidecars after the failed ingest: {h.orphan_blob_files}, "
              f"{h.orphan_bytes / 1e6:.1f} MB; `mmfs maintain` removed {rep['orphans_removed']} file(s), "
              f"{rep['orphan_bytes'] / 1e6:.1f} MB")


CHILD = r"""
import resource, sys
from mmfs_assets.ingest.ingest_drop import ingest_drop
limit = int(sys.argv[3])
if limit:
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
try:
    rep = ingest_drop(sys.argv[1], "big", sys.argv[2], properties={})
except OSError as e:
    print("ERROR", type(e).__name__, e)
    sys.exit(3)
print("OK", rep.new_rows)
"""


def test_file_size_limit(env, tmp_path):
    """A write stopped by a file size limit (RLIMIT_FSIZE, EFBIG) says so, not what Lance noticed; lifting the
    limit, the re-run completes."""
    hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
    if hard != resource.RLIM_INFINITY and hard < 64 << 20:
        pytest.skip(f"this process's file size limit is already {hard} bytes")
    drop = _drop(env, "big", [VIDEO_BYTES] * 2)
    uri = str(tmp_path / "limited.lance")
    root = str(Path(__file__).resolve().parent.parent)

    def child(limit: int) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", CHILD, str(drop), uri, str(limit)], cwd=root,
                              capture_output=True, text=True, timeout=120)

    r = child(5_000_000)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "ERROR FileTooLargeError file too large on " in r.stdout and "`ulimit -f`" in r.stdout
    assert "the partial files are orphans that `mmfs maintain` removes" in r.stdout
    r = child(0)
    assert r.returncode == 0 and "OK 2" in r.stdout, r.stdout + r.stderr


def test_write_errors_are_told_apart(tmp_path):
    """ENOSPC in Lance's words is a full disk; another I/O error on a disk with room is left as it is."""
    from mmfs_assets.table.append import NoSpaceError, no_space

    table = TableRef.of(str(tmp_path / "t.lance"))
    e = no_space(table, OSError("LanceError(IO): No space left on device (os error 28), /x/lance/src/blob.rs:1:2"))
    assert isinstance(e, NoSpaceError) and str(e).startswith(f"no space left on device on {tmp_path} (")
    assert e.detail == "LanceError(IO): No space left on device (os error 28)"  # no build path
    if shutil.disk_usage(tmp_path).free > 64 << 20:
        assert no_space(table, OSError("LanceError(IO): Dedicated blob sidecar 'x' has size 1, expected 2")) is None
    assert no_space(table, ValueError("not an I/O error")) is None
