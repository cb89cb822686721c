"""Rollback under faults: a second rollback of the same partition, a table that moves, a kill between the
restore and the flagging, a fill committing in the moment before the restore (issue 23, item 3).

The table is tiny and synthetic (five rows in drops A and B, no video decoding): a "fill" of ``quality``
is one column-only DataReplacement commit carrying a run's transaction properties, as a real fill's chunk.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import lance
import pyarrow as pa
import pytest
from lance.blob import BlobType
from typer.testing import CliRunner

from mmfs_assets.cli.app import app
from mmfs_assets.features import discover
from mmfs_assets.store import rollback as rb
from mmfs_assets.store import rollback_journal as rj
from mmfs_assets.store import snapshots
from mmfs_assets.table.append import append_rows, open_or_create
from mmfs_assets.table.columns import ensure_group_columns
from mmfs_assets.table.replace import replace_columns
from mmfs_loader.contract.table import TableRef

ROOT = Path(__file__).resolve().parents[1]
QUALITY = {f.name: f for f in discover()}["quality"]
runner = CliRunner()


def _run(*args: str):
    return runner.invoke(app, list(args))


def mini_table(uri: Path, drops: dict[str, int] | None = None) -> str:
    """A table with the MMFS ingest schema and the (empty) ``quality`` columns: ``drops`` (drop -> rows,
    default A: 3, B: 2), one commit each; versions 1 (create), 2 (A), 3 (B), 4 (columns)."""
    open_or_create(str(uri))
    for d, n in (drops or {"A": 3, "B": 2}).items():
        blob = pa.StructArray.from_arrays(
            [pa.array([b"x"] * n, pa.large_binary()), pa.nulls(n, pa.utf8()), pa.nulls(n, pa.uint64()), pa.nulls(n, pa.uint64())],
            names=["data", "uri", "position", "size"])
        append_rows(str(uri), pa.table({
            "id": [f"{d}{i}" for i in range(n)], "drop_id": [d] * n, "source_uri": pa.nulls(n, pa.utf8()),
            "file_name": [f"{d}{i}.mp4" for i in range(n)], "size_bytes": [1] * n,
            "ingested_at": pa.nulls(n, pa.timestamp("us", tz="UTC")), "video_storage": ["inline"] * n,
            "video": pa.ExtensionArray.from_storage(BlobType(), blob),
        }), {"mmfs.asset": "videos", "mmfs.partition": d})
    ensure_group_columns(str(uri), QUALITY.group)  # declared before the first fill, as the fill engine does
    return str(uri)


def fill_quality(uri: str, drop: str, run_id: str = "run-1", producer: str = "quality-test") -> int:
    """Fill ``quality`` for the drop's rows in one commit, as a run's chunk does; returns its version."""
    rows = lance.dataset(uri).to_table(columns=[], with_row_id=True, filter=f"drop_id = '{drop}'")
    n = rows.num_rows
    values = pa.table({"_rowid": rows["_rowid"], "sharpness": [1.0] * n, "motion": [0.5] * n,
                       "quality_producer": [producer] * n, "quality_error": pa.nulls(n, pa.string())})
    return replace_columns(uri, values, locate_filter=f"drop_id = '{drop}'",
                           properties={"mmfs.asset": "quality", "mmfs.partition": drop, "mmfs.run_id": run_id}).version


def flags(asset: str = "quality") -> list[tuple[str | None, str]]:
    """(partition, status) of every ``<asset>_complete`` result in $DAGSTER_HOME, newest first."""
    with dg.DagsterInstance.get() as instance:
        recs = instance.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(dg.AssetKey(asset), f"{asset}_complete"), limit=100)
        return [(r.partition, r.status.value) for r in recs]


def _filled(uri: str) -> int:
    return lance.dataset(uri).count_rows("quality_producer IS NOT NULL")


@pytest.fixture
def table(tmp_path, monkeypatch) -> str:
    uri = mini_table(tmp_path / "videos.lance")
    monkeypatch.setenv("MMFS_TABLE_URI", uri)
    return uri


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    dh = (tmp_path / "dagster_home").resolve()
    dh.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(dh))
    return dh


def test_a_second_rollback_of_the_same_partition_flags_it_again(table, home):
    """Was: the second restore committed, then `unexpected error: IntegrityError ... UNIQUE constraint
    failed: asset_check_executions` (exit 1), no report, no flags."""
    snapshots.create(table, "t0")
    for n in (1, 2):
        fill_quality(table, "B", run_id=f"run-{n}")
        assert _filled(table) == 2
        r = _run("rollback", "--to", "t0", "--format", "json")
        assert r.exit_code == 0, r.output
        out = json.loads(r.stdout)
        assert out["marked_for_rerun"] == ["quality[B]"] and out["new_version"] == lance.dataset(table).version
        assert [u["partition"] for u in out["undone"]] == ["B"]
        assert _filled(table) == 0
        assert flags() == [("B", "FAILED")] * n  # one failed check result per rollback, the newest first


def test_a_table_that_moves_is_a_refusal_with_a_hint(table, home, monkeypatch):
    """Was: `unexpected error: RuntimeError: the table moved...` (a safe refusal worded as a crash)."""
    from mmfs_assets.cli import store_commands

    snapshots.create(table, "t0")
    fill_quality(table, "B")
    moved = {}

    def writers_then_a_fill_commits() -> list[str]:  # no run in the instance; an --ephemeral fill commits
        moved["version"] = fill_quality(table, "A", run_id="run-ephemeral")
        return []

    monkeypatch.setattr(store_commands, "_writers", writers_then_a_fill_commits)
    r = _run("rollback", "--to", "t0")
    assert r.exit_code == 1, r.output
    assert "error: the table moved from version" in r.output and "unexpected error" not in r.output
    assert "hint: wait for the fill(s) to finish or stop them, then run the rollback again" in r.output
    assert lance.dataset(table).version == moved["version"] and _filled(table) == 5  # nothing restored
    assert flags() == [] and not list(home.rglob("mmfs-rollbacks/*.json"))  # nothing flagged or left pending


CHILD = """
import sys, time
from pathlib import Path
from mmfs_assets.cli import store_commands

def killed_before_flagging(undone, label):
    Path(sys.argv[1]).write_text(",".join(f"{u.asset}[{u.partition}]" for u in undone))
    time.sleep(600)

store_commands.mark_rerun = killed_before_flagging
from mmfs_assets.cli.app import app
app(["rollback", "--to", "t0"])
"""


def test_a_rollback_killed_before_flagging_is_finished_by_the_next_one(table, home, tmp_path):
    """Was: a SIGKILL between the restore and the flagging left the undone partitions never flagged."""
    snapshots.create(table, "t0")
    fill_quality(table, "B")
    before = lance.dataset(table).version
    marker = tmp_path / "restored"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(marker)], cwd=ROOT, env=os.environ.copy(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(1200):  # the restore has committed once the child is about to flag
            if marker.exists() or child.poll() is not None:
                break
            time.sleep(0.1)
        assert marker.exists(), child.stderr.read().decode() if child.poll() is not None else "child never flagged"
        assert marker.read_text() == "quality[B]"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stderr.close()
    assert lance.dataset(table).version == before + 1 and _filled(table) == 0  # restored ...
    assert flags() == []  # ... and killed before flagging
    r = _run("rollback", "--to", "t0")
    assert r.exit_code == 0, r.output
    assert flags() == [("B", "FAILED")]  # the next rollback finished the flagging
    said = " ".join(r.output.split())
    assert (f"finished flagging the rollback to snapshot t0 (version 4) that stopped after committing version "
            f"{before + 1}: marked 1 asset partition(s) as needing a re-run: quality[B]") in said
    assert "the table already reads as snapshot t0 (version 4): nothing to do" in said  # no second restore
    assert lance.dataset(table).version == before + 1
    r = _run("rollback", "--to", "t0")  # finished once: nothing left to finish
    assert r.exit_code == 0 and "finished flagging" not in r.output and flags() == [("B", "FAILED")]


def test_finishing_a_recorded_rollback(table, home):
    """The journal's cases without a child process: a restore that committed but was never flagged (found
    by its id in the table's history), a partition re-run since (not flagged), a restore that never
    committed (dropped, nothing flagged)."""
    ref = TableRef.of(table)
    journal = rj.Journal(home / rj.JOURNAL_DIR)
    snapshots.create(table, "t0")
    fill_quality(table, "A")
    fill_quality(table, "B")
    p = rb.plan(ref, "t0")
    assert [(u.asset, u.partition) for u in p.undone] == [("quality", "A"), ("quality", "B")]
    journal.save(ref, p)  # killed after the restore, before saving its version
    rb.execute(ref, p)
    fill_quality(table, "A", run_id="run-again")  # A re-run since: its values are current again
    never = rb.plan(ref, "t0")
    journal.save(ref, never)  # killed before its restore
    calls = []

    def flag(undone, label):
        calls.append(([(u.asset, u.partition) for u in undone], label))
        return [f"{u.asset}[{u.partition}]" for u in undone]

    with journal.locked():
        done = rj.finish_pending(ref, journal, flag)
    assert [(d.id, d.new_version, marked) for d, marked in done] == [(p.id, p.new_version, ["quality[B]"])]
    assert calls == [([("quality", "B")], "snapshot t0 (version 4)")]
    assert journal.pending(ref) == []
    with journal.locked():
        assert rj.finish_pending(ref, journal, flag) == [] and len(calls) == 1


def test_a_fill_committing_just_before_the_restore_is_reported_and_flagged(table, home, monkeypatch):
    """Was: an --ephemeral fill reported its rows computed, the rollback's race window removed them, and
    nothing said so. Now the rollback names the commit it undid and flags its partition."""
    snapshots.create(table, "t0")
    fill_quality(table, "B")
    check = rb.refuse_if_moved
    racer = {}

    def check_then_a_fill_commits(ref, p):  # the moment between the rollback's check and its restore
        check(ref, p)
        racer["version"] = fill_quality(table, "A", run_id="run-racer")

    monkeypatch.setattr(rb, "refuse_if_moved", check_then_a_fill_commits)
    r = _run("rollback", "--to", "t0", "--format", "json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["raced"] == [{"version": racer["version"], "operation": "DataReplacement", "asset": "quality",
                             "partition": "A", "run_id": "run-racer"}]
    assert out["new_version"] == racer["version"] + 1 and _filled(table) == 0  # A's values are gone ...
    assert [(u["asset"], u["partition"]) for u in out["undone"]] == [("quality", "A"), ("quality", "B")]  # ... and said
    assert f"version {racer['version']}, committed while the rollback ran" in out["undone"][0]["what"]
    assert sorted(out["marked_for_rerun"]) == ["quality[A]", "quality[B]"]
    assert sorted(flags()) == [("A", "FAILED"), ("B", "FAILED")]
