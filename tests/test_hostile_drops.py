"""A drop is untrusted input: races between listing and reading, links out of the drop, bad files.

Each race is made deterministic with the ingest's ``before_read`` hook (called just before a file is
opened) or its progress callback (called while a file is being read), instead of timing luck.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import tracemalloc
from pathlib import Path

import lance
import pytest

from mmfs_assets.cli.run import MaterializeError, materialize_drop
from mmfs_assets.ingest.drops import DropRefusedError
from mmfs_assets.ingest.ingest_drop import ingest_drop
from mmfs_loader.contract import schema as S
from tests.conftest import make_drop

ROOT = Path(__file__).resolve().parent.parent


def _good(fixture_dir: Path) -> list[Path]:
    return sorted((fixture_dir / "good").iterdir())


def _stored(uri: str) -> list[dict]:
    """Every row with the bytes of its stored blob (inline bytes or the pointer's target)."""
    ds = lance.dataset(uri)
    t = ds.to_table(columns=[S.ID, S.FILE_NAME, S.SOURCE_URI, S.SIZE_BYTES, S.VIDEO_STORAGE], with_row_id=True)
    rows = t.to_pylist()
    blobs = ds.take_blobs(S.VIDEO, ids=[r["_rowid"] for r in rows])
    for r, b in zip(rows, blobs):
        with b:
            r["bytes"] = b.read()
    return rows


def _assert_ids_are_content_hashes(rows: list[dict]) -> None:
    for r in rows:
        assert hashlib.sha256(r["bytes"]).hexdigest() == r[S.ID], r[S.FILE_NAME]
        assert len(r["bytes"]) == r[S.SIZE_BYTES]


def test_link_repointed_after_listing_reads_the_listed_target(env, fixture_dir, tmp_path):
    good = _good(fixture_dir)
    secret = tmp_path / "passwd"
    secret.write_bytes(b"root:x:0:0:root:/root:/bin/bash\n" * 100)
    drop = make_drop(env, "race-link", good[:2])
    (drop / "zz-link.mp4").symlink_to(drop / good[1].name)

    def repoint(f):
        if f.relpath == good[0].name:  # while the first (real) file is read, the link changes
            (drop / "zz-link.mp4").unlink()
            (drop / "zz-link.mp4").symlink_to(secret)

    rep = ingest_drop(drop, "race-link", env.table_uri, properties={}, before_read=repoint)
    rows = _stored(env.table_uri)
    assert rep.new_rows == 2 and rep.duplicates_in_drop == 1  # the link still read the listed target
    assert all(secret.read_bytes() != r["bytes"] for r in rows)
    assert all(r[S.SOURCE_URI].startswith(drop.resolve().as_uri() + "/") for r in rows)
    _assert_ids_are_content_hashes(rows)


def test_folder_swapped_for_a_link_after_listing_is_skipped(env, fixture_dir, tmp_path):
    good = _good(fixture_dir)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "v.mp4").write_bytes(b"SECRET" * 1000)
    drop = make_drop(env, "race-dir", [good[0]])
    (drop / "sub").mkdir()
    shutil.copy(good[1], drop / "sub" / "v.mp4")

    def swap(f):
        if f.relpath == "sub/v.mp4":
            (drop / "sub").rename(drop / ".sub-old")
            (drop / "sub").symlink_to(outside, target_is_directory=True)

    rep = ingest_drop(drop, "race-dir", env.table_uri, properties={}, before_read=swap)
    reasons = {s.relpath: s.reason for s in rep.skipped}
    assert "no longer a real folder" in reasons["sub/v.mp4"]
    rows = _stored(env.table_uri)
    assert [r[S.FILE_NAME] for r in rows] == [good[0].name]
    _assert_ids_are_content_hashes(rows)


def test_file_replaced_by_a_fifo_after_listing_does_not_hang(env, fixture_dir):
    good = _good(fixture_dir)
    drop = make_drop(env, "race-fifo", good[:2])

    def to_fifo(f):
        if f.relpath == good[1].name:
            (drop / good[1].name).unlink()
            os.mkfifo(drop / good[1].name)

    rep = ingest_drop(drop, "race-fifo", env.table_uri, properties={}, before_read=to_fifo)
    assert rep.new_rows == 1
    assert "not a regular file" in {s.relpath: s.reason for s in rep.skipped}[good[1].name]


def test_rewrites_during_the_ingest_never_store_bytes_other_than_hashed(env, fixture_dir):
    good = _good(fixture_dir)
    drop = make_drop(env, "race-rewrite", good[:3])
    first, second, third = (drop / g.name for g in good[:3])

    def rewrite_previous(f):
        if f.relpath == good[1].name:  # the first file was read already: rewrite it now
            first.write_bytes(b"rewritten after it was read" * 100)

    calls = []

    def grow_while_read(phase, done, total):  # called after each chunk read: the third file grows mid-read
        calls.append(phase)
        if calls.count("hash") == 3 and phase == "hash":
            with open(third, "ab") as fh:
                fh.write(b"\0" * 4096)

    rep = ingest_drop(
        drop, "race-rewrite", env.table_uri, properties={}, before_read=rewrite_previous, progress=grow_while_read
    )
    rows = _stored(env.table_uri)
    _assert_ids_are_content_hashes(rows)
    assert {r[S.FILE_NAME] for r in rows} | {s.relpath for s in rep.skipped} >= {good[0].name, good[1].name}
    assert rep.new_rows == len(rows) == 2
    assert "changed while it was read" in {s.relpath: s.reason for s in rep.skipped}[good[2].name]


def test_materialize_refuses_a_symlinked_drop_like_the_sensor(env, fixture_dir, instance, tmp_path):
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    shutil.copy(_good(fixture_dir)[0], secrets / "key.mp4")
    (Path(env.drop_dir) / "linked").symlink_to(secrets, target_is_directory=True)
    with pytest.raises(MaterializeError, match="symlink"):
        materialize_drop("linked", None, instance, env)
    with pytest.raises(DropRefusedError, match="symlink"):
        ingest_drop(Path(env.drop_dir) / "linked", "linked", env.table_uri, properties={})
    assert not Path(env.table_uri).exists()

    # the asset itself (as the UI would launch it) refuses it too
    import dagster as dg

    from mmfs_assets.defs.ingest.videos import videos
    from mmfs_assets.resources import build_resources

    instance.add_dynamic_partitions("drops", ["linked"])
    r = dg.materialize([videos], partition_key="linked", instance=instance, resources=build_resources(env),
                       raise_on_error=False)
    assert not r.success
    assert "symlink" in str([e.step_failure_data.error.message for e in r.all_events if e.is_step_failure])


def test_bad_files_become_skip_entries_and_good_files_land(env, fixture_dir, instance, tmp_path, monkeypatch):
    good = sorted(_good(fixture_dir), key=lambda p: p.stat().st_size)  # good[5] is larger than the others used
    drop = make_drop(env, "bad-files", good[:3], ready=False)
    (drop / "loop-a.mp4").symlink_to(drop / "loop-b.mp4")
    (drop / "loop-b.mp4").symlink_to(drop / "loop-a.mp4")
    raw_name = os.fsencode(str(drop)) + b"/caf\xe9-latin1.mp4"
    shutil.copy(good[3], raw_name)
    raw_big = os.fsencode(str(drop)) + b"/big-\xff.mp4"  # over the inline limit: a pointer cannot name it
    shutil.copy(good[6], raw_big)
    (drop / "locked").mkdir()
    shutil.copy(good[4], drop / "locked" / "v.mp4")
    big = drop / "big.mp4"
    shutil.copy(good[5], big)
    monkeypatch.setenv("MMFS_INLINE_MAX_BYTES", str(good[4].stat().st_size))
    os.chmod(drop / "locked", 0)
    try:
        from mmfs_assets.settings import Settings

        r = materialize_drop("bad-files", ["videos", "video_metadata"], instance, Settings.from_env())
        assert r.success
    finally:
        os.chmod(drop / "locked", 0o755)
    rows = {r[S.FILE_NAME]: r for r in _stored(env.table_uri)}
    assert {g.name for g in good[:3]} <= set(rows)
    assert rows["caf\\xe9-latin1.mp4"]["bytes"] == good[3].read_bytes()  # odd bytes shown as \xNN
    assert "not valid UTF-8" in r.asset_materializations_for_node("videos")[0].metadata["files_skipped"].value
    assert rows["big.mp4"][S.VIDEO_STORAGE] == "pointer" and rows["big.mp4"]["bytes"] == good[5].read_bytes()
    meta = lance.dataset(env.table_uri).to_table(columns=[S.FILE_NAME, "width", "metadata_error"]).to_pylist()
    assert all(m["metadata_error"] is None and m["width"] for m in meta)  # the pointer row decodes too
    if os.geteuid() != 0:  # root reads mode-000 folders: the unreadable case runs as nobody below
        assert "locked/v.mp4" not in rows


def test_loop_is_skipped_with_its_reason(tmp_path):
    from mmfs_assets.ingest.drops import list_drop_files

    drop = tmp_path / "d"
    drop.mkdir()
    (drop / "a.mp4").symlink_to(drop / "b.mp4")
    (drop / "b.mp4").symlink_to(drop / "a.mp4")
    (drop / "dir-loop").symlink_to(drop / "dir-loop", target_is_directory=True)
    files, skipped = list_drop_files(drop)
    assert files == []
    assert {s.relpath: s.reason for s in skipped} == {
        "a.mp4": "symlink loop", "b.mp4": "symlink loop", "dir-loop": "symlink loop"}


@pytest.mark.skipif(not hasattr(os, "setuid") or os.geteuid() != 0, reason="needs root to become another user")
def test_unreadable_file_and_folder_as_a_non_root_user(fixture_dir):
    """Mode-000 files and folders, ingested by a non-root user: skip entries, the good file lands."""
    good = _good(fixture_dir)
    base = Path(tempfile.mkdtemp(prefix="mmfs-nobody-"))
    try:
        os.chmod(base, 0o777)
        drop = base / "drops" / "locked"
        (drop / "sub").mkdir(parents=True)
        shutil.copy(good[0], drop / "ok.mp4")
        shutil.copy(good[1], drop / "secret.mp4")
        shutil.copy(good[2], drop / "sub" / "hidden.mp4")
        for p in [base / "drops", drop, drop / "sub", drop / "ok.mp4"]:
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
        os.chmod(drop / "secret.mp4", 0)
        os.chmod(drop / "sub", 0)
        code = (  # imports as root (the interpreter lives under /root), then becomes nobody for the ingest
            "import json, os; from pathlib import Path; from mmfs_assets.ingest.ingest_drop import ingest_drop\n"
            "os.setresgid(65534, 65534, 65534); os.setresuid(65534, 65534, 65534)\n"
            f"r = ingest_drop(Path({str(drop)!r}), 'locked', {str(base / 'videos.lance')!r}, properties={{}})\n"
            "print(json.dumps({'new': r.new_rows, 'skipped': {s.relpath: s.reason for s in r.skipped}}))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
            env={**os.environ, "HOME": str(base)},
        )
        assert out.returncode == 0, out.stderr
        res = json.loads(out.stdout.strip().splitlines()[-1])
        assert res["new"] == 1
        assert "Permission denied" in res["skipped"]["secret.mp4"]
        assert "Permission denied" in res["skipped"]["sub"]
    finally:
        for p in base.rglob("*"):
            if p.is_dir() and not p.is_symlink():
                os.chmod(p, 0o755)
        shutil.rmtree(base, ignore_errors=True)


def test_large_files_stream_in_bounded_memory(env, tmp_path):
    """A file over the inline limit is hashed streaming and stored as a pointer: memory stays bounded."""
    drop = Path(env.drop_dir) / "huge"
    drop.mkdir()
    big = drop / "huge.mp4"
    with open(big, "wb") as fh:
        fh.truncate(96 << 20)  # 96 MiB (sparse): the ingest must not hold it in memory
    (drop / "small.mp4").write_bytes(os.urandom(1 << 20))
    tracemalloc.start()
    try:
        rep = ingest_drop(drop, "huge", env.table_uri, properties={}, inline_max_bytes=4 << 20, chunk_bytes=2 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rep.new_rows == 2 and rep.pointer_rows == 1
    assert peak < 24 << 20, f"peak traced memory {peak / 2**20:.1f} MiB for a 96 MiB file"
    rows = {r[S.FILE_NAME]: r for r in lance.dataset(env.table_uri).to_table(
        columns=[S.FILE_NAME, S.ID, S.VIDEO_STORAGE, S.SIZE_BYTES]).to_pylist()}
    assert rows["huge.mp4"][S.VIDEO_STORAGE] == "pointer" and rows["huge.mp4"][S.SIZE_BYTES] == 96 << 20
    assert rows["huge.mp4"][S.ID] == hashlib.sha256(b"\0" * (96 << 20)).hexdigest()
    assert rows["small.mp4"][S.VIDEO_STORAGE] == "inline"


def test_a_file_that_grows_past_the_limit_after_listing_is_stored_as_a_pointer(env, tmp_path):
    """The inline limit is judged on the opened file, not on its listed size."""
    drop = Path(env.drop_dir) / "grow"
    drop.mkdir()
    (drop / "a.mp4").write_bytes(b"small")

    def grow(f):
        with open(drop / "a.mp4", "ab") as fh:
            fh.truncate(64 << 20)

    tracemalloc.start()
    try:
        rep = ingest_drop(drop, "grow", env.table_uri, properties={}, inline_max_bytes=4 << 20, before_read=grow)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rep.pointer_rows == 1 and peak < 24 << 20
    _assert_ids_are_content_hashes(_stored(env.table_uri))


def test_chunk_buffer_keeps_one_copy_and_compacts_kept_files():
    import numpy as np

    from mmfs_assets.ingest.rows import ChunkBuffer, Pending
    from mmfs_assets.ingest.safe_open import ReadResult

    buf = ChunkBuffer(100)
    items = []
    for i, n in enumerate([10, 20, 30]):
        mark = buf.used
        data = buf.alloc(n)
        data[:] = i + 1
        items.append(Pending(None, ReadResult(str(i), n, data), "", "inline"))
    dup = buf.alloc(5)  # a duplicate read, given back
    buf.rollback(buf.used - len(dup))
    assert buf.used == 60 and mark == 30
    whole = buf.contents(items)
    assert whole is not None and np.shares_memory(whole, buf.buf) and len(whole) == 60
    kept = [items[0], items[2]]  # the middle one was already in the table
    packed = buf.contents(kept)
    assert np.shares_memory(packed, buf.buf) and len(packed) == 40  # moved down, no new buffer
    assert packed[:10].tolist() == [1] * 10 and packed[10:].tolist() == [3] * 30
    assert kept[1].read.data.tolist() == [3] * 30
    big = buf.alloc(500)  # larger than the chunk: its own array, never in the shared buffer
    assert not np.shares_memory(big, buf.buf if buf.buf is not None else np.empty(0))
