"""Failures of the machinery are not the video's: maintenance during a fill, workers killed from outside,
workers that cannot set up, reads that fail. None becomes a row's error under the current producer; a
plain re-run retries what was left."""

from __future__ import annotations

import os
import signal
import time
from datetime import timedelta
from pathlib import Path

import lance
import pytest

from mmfs_assets import samples
from mmfs_assets.engine import tasks
from mmfs_assets.engine.pool import TaskFailed, WorkerPool
from mmfs_assets.engine.report import FillIncomplete
from mmfs_assets.features import discover
from mmfs_assets.store.maintain import maintain
from mmfs_loader.contract import leases
from mmfs_loader.contract import schema as S
from mmfs_loader.contract.table import TableRef, VersionNotFoundError, known_tags, open_table
from tests import poison
from tests.features_util import build_table, fill, tiny

FEATURES = {f.name: f for f in discover()}


def _workers_of(pid: int) -> list[int]:
    """The engine's decode worker processes started by ``pid``."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmd = (d / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid and b"mmfs_assets.engine.worker" in cmd:
            out.append(int(d.name))
    return out


@pytest.fixture
def table8(tmp_path) -> str:
    drop = tmp_path / "D"
    drop.mkdir()
    for i in range(8):
        samples.write_video(drop / f"v{i}.mp4", samples.Spec(f"v{i}", 64, 48, 10, 1.0 + 0.1 * i))
    uri = str(tmp_path / "t.lance")
    build_table(uri, {"D": drop}, fragment_rows=2)
    return uri


def _rows(uri: str, group: str) -> list[dict]:
    return lance.dataset(uri).to_table(columns=[S.FILE_NAME, "sharpness", f"{group}_error", f"{group}_producer"]).to_pylist()


def test_maintenance_and_a_killed_worker_during_a_fill_keep_every_value(table8, model_dir):
    """The issue's reproduction: a forced fill commits its first chunk, `maintain --retention-days 0` runs,
    a decode worker is killed from outside. Before: the replacement worker could not open the fill's
    version (removed) and every row queued to it became an error under the current producer."""
    feature = FEATURES["quality"]
    model = tiny(feature, model_dir)
    fill(table8, "D", feature, model, chunk_rows=2)
    pinned = lance.dataset(table8).version
    seen: dict = {}

    def after_first_commit(done: int, total: int) -> None:
        if seen:
            return
        seen["maintenance"] = maintain(table8, retention=timedelta(0))
        seen["leases"] = leases.active(TableRef(table8))
        victims = _workers_of(os.getpid())
        assert victims, "no decode worker to kill"
        os.kill(victims[0], signal.SIGKILL)

    rep = fill(table8, "D", feature, model, chunk_rows=2, decode_workers=2, prefetch=2, force=True,
               progress=after_first_commit)  # a small window: rows still to decode when the worker dies
    m = seen["maintenance"]
    assert m.versions_removed > 0  # maintenance did remove old versions...
    assert [lease.version for lease in seen["leases"]] == [pinned]  # ...but the fill's version was leased
    assert any("lease on version" in s for s in m.skipped)  # and no compaction under a running fill
    lance.dataset(table8, version=pinned)  # still readable
    rows = _rows(table8, "quality")
    assert all(r["quality_error"] is None and r["sharpness"] is not None for r in rows), rows
    assert all(r["quality_producer"] == model.producer for r in rows)
    assert rep.rows_computed == 8 and rep.rows_errored == 0 and rep.rows_deferred == 0
    assert not leases.leases(TableRef(table8))  # released at the end
    assert not any(n.startswith("mmfs-lease") for n in known_tags(table8))  # never shown as snapshots
    # a lease cannot be opened as a snapshot either
    with pytest.raises(VersionNotFoundError, match="version leases of running fills"):
        open_table(table8, tag=seen["leases"][0].name)


def test_a_worker_opens_the_latest_version_when_its_version_is_gone(table8):
    """Defence in depth (a lease that expired, a table maintained by an older MMFS): blobs keep their
    stable row ids, so a worker whose version was removed reads the same videos from the latest one."""
    ds = lance.dataset(table8)
    old = ds.version - 1
    ds.cleanup_old_versions(older_than=timedelta(0), error_if_tagged_old_versions=False)
    with pytest.raises(Exception, match="not found"):
        lance.dataset(table8, version=old)
    tasks.open_table(TableRef(table8), old, storage_retry_s=1.0)
    rowid = int(ds.to_table(columns=[], with_row_id=True)["_rowid"][0].as_py())
    out = tasks.probe_row(rowid, 1, 0)
    assert out.error is None and out.values["width"] == 64


@pytest.mark.timeout(120)
def test_pool_retries_a_task_whose_worker_was_killed_and_marks_setup_failures_infra(tmp_path):
    marker = tmp_path / "started"
    with WorkerPool(1, timeout=30.0) as pool:
        tid = pool.submit(poison.sleep_then_echo, str(marker), 2.0, "survived")
        while not marker.exists():
            pool.poll(0.1)
        marker.unlink()
        os.kill(pool.pids()[0], signal.SIGKILL)
        assert pool.result(tid) == "survived"  # ran again on a fresh worker, not the row's error
        assert pool.restarts == 1
        os.kill(pool.pids()[0], signal.SIGKILL)  # now killed while idle: replaced, the next task still runs
        time.sleep(0.2)
        assert pool.result(pool.submit(poison.echo, 2)) == 2
        assert pool.restarts == 2
    marker.unlink(missing_ok=True)  # the retried task above wrote it again
    with WorkerPool(1, timeout=60.0) as pool:  # killed from outside on every try: the machinery's, not the row's
        tid = pool.submit(poison.sleep_then_echo, str(marker), 30.0, "never")
        for _ in range(3):
            while not marker.exists():
                pool.poll(0.1)
            marker.unlink()
            os.kill(pool.pids()[0], signal.SIGKILL)
            pool.poll(0.5)
        out = pool.result(tid)
        assert isinstance(out, TaskFailed) and out.infra and "killed from outside" in out.message, out
    with WorkerPool(1, initializer=poison.fail_setup) as pool:
        out = pool.result(pool.submit(poison.echo, 1))
        assert isinstance(out, TaskFailed) and out.infra and "worker setup failed" in out.message


def test_deferred_rows_are_left_for_the_next_plain_run(table8, model_dir, tmp_path, monkeypatch):
    """Rows whose read failed for storage reasons are not written (no error under the current producer);
    the run fails with the count and the reason after committing the rest; a plain re-run computes them."""
    feature = FEATURES["quality"]
    model = tiny(feature, model_dir)
    flag = tmp_path / "storage-down"
    flag.touch()
    monkeypatch.setenv("MMFS_TEST_STORAGE_DOWN", str(flag))
    with pytest.raises(FillIncomplete, match="2 rows were not computed") as e:
        fill(table8, "D", feature, model, chunk_rows=2, decode_task=poison.decode_or_storage_down)
    rep = e.value.report
    assert (rep.rows_computed, rep.rows_errored, rep.rows_deferred) == (6, 0, 2)
    assert "storage error" in rep.deferred_reasons[0]
    rows = {r["file_name"]: r for r in _rows(table8, "quality")}
    for name in ("v1.mp4", "v5.mp4"):  # untouched: no value, no error, no producer
        assert rows[name]["quality_producer"] is None and rows[name]["quality_error"] is None
    flag.unlink()  # storage is back
    again = fill(table8, "D", feature, model, chunk_rows=2, decode_task=poison.decode_or_storage_down)
    assert (again.rows_already_current, again.rows_computed, again.rows_deferred) == (6, 2, 0)
    rows = _rows(table8, "quality")
    assert all(r["quality_error"] is None and r["quality_producer"] == model.producer for r in rows)


@pytest.mark.slow
def test_a_network_outage_during_a_metadata_fill_on_object_storage_quarantines_nothing(tmp_path, fixture_dir):
    """The issue's S3 case: the table on an S3 server, the network to it cut for 15 s during the
    metadata fill. Before: good videos got `metadata_error = "decode failed ... LanceError(IO) ..."` and a
    plain re-run kept them. Now reads and commits wait the outage out; nothing is quarantined."""
    import threading
    import time

    from mmfs_assets.engine.fill import fill_feature
    from mmfs_assets.ingest.describe import METADATA_FEATURE, probe_model
    from mmfs_assets.ingest.ingest_drop import ingest_drop
    from tests.flaky_proxy import FlakyProxy
    from tests.moto_server import moto_s3

    drop = tmp_path / "D"
    drop.mkdir()
    for i in range(16):
        samples.write_video(drop / f"v{i:02d}.mp4", samples.Spec(f"v{i}", 64, 48, 10, 1.0 + 0.1 * i))
    with moto_s3("mmfs") as options:
        port = int(options["aws_endpoint"].rsplit(":", 1)[1])
        proxy = FlakyProxy(("127.0.0.1", port))
        try:
            opts = {**options, "aws_endpoint": f"http://127.0.0.1:{proxy.port}"}
            table = TableRef("s3://mmfs/t/videos.lance", opts)
            ingest_drop(drop, "D", table, properties={"mmfs.asset": "videos"}, fragment_rows=4)
            cut: dict = {}

            def outage(done: int, total: int) -> None:
                if not cut:  # after the first commit: the network goes down for 15 s (the outage)
                    cut["at"] = done  # (Lance's own client retries ride out a few seconds, not this)
                    proxy.down()
                    threading.Timer(15.0, proxy.up).start()

            # one worker, one row ahead: the rows after the first chunk are read during the outage
            rep = fill_feature(table, "D", METADATA_FEATURE, probe_model(), properties={"mmfs.asset": "video_metadata"},
                               chunk_rows=4, decode_workers=1, prefetch=1, progress=outage)
            time.sleep(0.1)
            assert cut and proxy.refused > 0  # the outage happened and was felt
            rows = table.dataset().to_table(columns=[S.FILE_NAME, "metadata_error", "width"]).to_pylist()
            assert [r for r in rows if r["metadata_error"] is not None] == []
            assert all(r["width"] == 64 for r in rows)
            assert rep.rows_computed == 16 and rep.rows_deferred == 0, rep.to_dict()
            assert rep.storage_retries > 0, rep.to_dict()  # reads or commits met the outage and waited
        finally:
            proxy.close()


def test_a_rollback_refuses_while_a_fill_runs_and_a_fill_knows_when_a_rollback_undid_it(table8, model_dir):
    """The rollback and the fill must not both report success when the fill's values are gone: while the
    fill holds its lease a rollback refuses; a restore that still lands between the fill's commits (the
    lease check raced) makes the fill fail, naming the rollback, instead of reporting rows computed."""
    from mmfs_assets.store import rollback as rb
    from mmfs_loader.contract.table import check_tag_name

    feature = FEATURES["quality"]
    model = tiny(feature, model_dir)
    fill(table8, "D", feature, model, chunk_rows=2)
    before = lance.dataset(table8).version
    seen: dict = {}

    def race(done: int, total: int) -> None:
        if seen:
            return
        p = rb.plan(table8, str(before))
        with pytest.raises(rb.FillRunningError, match="a fill is running on the table: quality"):
            rb.execute(table8, p)
        seen["refused"] = True
        lance.dataset(table8, version=before).restore()  # a restore that raced the lease check

    with pytest.raises(FillIncomplete, match="a rollback .* removed values this fill had committed") as e:
        fill(table8, "D", feature, model, chunk_rows=2, prefetch=2, progress=race, force=True)
    assert seen["refused"] and e.value.report.undone_by_rollback_version is not None
    with pytest.raises(ValueError, match="version leases"):
        check_tag_name("mmfs-lease-1-x-ab", new=True)
