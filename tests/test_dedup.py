"""One row per content id is a property of the table write, not of a Dagster pool.

The race is made deterministic: ingest A has checked which ids the table holds, then (inside a wrapper
around its append) ingest B runs to completion in another process (its own "instance"), then A appends
the shared videos anyway, as two ingests in two Dagster instances would.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import UTC
from pathlib import Path

import lance

from mmfs_assets.ingest import ingest_drop as mod
from mmfs_loader.contract import schema as S
from tests.conftest import make_drop

ROOT = Path(__file__).resolve().parent.parent


def _ingest_in_other_process(drop: Path, key: str, uri: str) -> None:
    code = f"from pathlib import Path; from mmfs_assets.ingest.ingest_drop import ingest_drop; " \
           f"ingest_drop(Path({str(drop)!r}), {key!r}, {uri!r}, properties={{}})"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)


def _drops(env, fixture_dir):
    good = sorted((fixture_dir / "good").iterdir())
    return make_drop(env, "a", good[:5]), make_drop(env, "b", good[2:7])  # 3 videos in both


def test_racing_ingests_leave_one_row_per_video(env, fixture_dir, monkeypatch):
    a, b = _drops(env, fixture_dir)
    real_append, raced = mod.append_rows, []

    def append_after_b(*args, **kw):
        if not raced:
            raced.append(True)
            _ingest_in_other_process(b, "b", env.table_uri)  # B commits between A's check and A's append
        return real_append(*args, **kw)

    monkeypatch.setattr(mod, "append_rows", append_after_b)
    rep = mod.ingest_drop(a, "a", env.table_uri, properties={})
    assert raced and rep.duplicates_removed == 3
    assert rep.new_rows == 2  # 5 appended, 3 of them lost to B's earlier commit
    t = lance.dataset(env.table_uri).to_table(columns=[S.ID, S.DROP_ID])
    ids = t[S.ID].to_pylist()
    assert len(ids) == len(set(ids)) == 7
    assert t[S.DROP_ID].to_pylist().count("b") == 5  # the shared videos stay with the first committed drop

    from mmfs_loader import FeatureDataset, Guard

    seen = [s["id"] for s in FeatureDataset(env.table_uri, columns=["file_name"], guard=Guard(include_quarantined=True))]
    assert sorted(seen) == sorted(ids)


def test_a_run_killed_between_append_and_dedup_is_repaired_by_the_next_ingest(env, fixture_dir):
    a, b = _drops(env, fixture_dir)
    killed = textwrap.dedent(f"""
        import os
        from pathlib import Path
        from mmfs_assets.ingest import ingest_drop as mod
        real = mod.append_rows
        def append_then_die(*args, **kw):
            import subprocess, sys
            subprocess.run([sys.executable, "-c", {f"from pathlib import Path; from mmfs_assets.ingest.ingest_drop import ingest_drop; ingest_drop(Path({str(b)!r}), 'b', {env.table_uri!r}, properties={{}})"!r}], check=True)
            real(*args, **kw)
            os._exit(9)  # killed after its commit, before its dedup
        mod.append_rows = append_then_die
        mod.ingest_drop(Path({str(a)!r}), "a", {env.table_uri!r}, properties={{}})
    """)
    r = subprocess.run([sys.executable, "-c", killed], cwd=ROOT, timeout=180)
    assert r.returncode == 9
    ids = lance.dataset(env.table_uri).to_table(columns=[S.ID])[S.ID].to_pylist()
    assert len(ids) == 10 and len(set(ids)) == 7  # the fault: 3 videos twice
    rep = mod.ingest_drop(a, "a", env.table_uri, properties={})  # the re-run of the killed drop
    assert rep.new_rows == 0 and rep.duplicates_removed == 3
    ids = lance.dataset(env.table_uri).to_table(columns=[S.ID])[S.ID].to_pylist()
    assert len(ids) == len(set(ids)) == 7


def test_dedup_of_many_ids_scans_once_and_keeps_the_first_commit(tmp_path, monkeypatch):
    """Above the IN-list size the dedup reads the id column once; the choice of survivors is the same."""
    from datetime import datetime

    import pyarrow as pa

    from mmfs_assets.table import dedup

    uri = str(tmp_path / "t.lance")

    def rows(ids, drop):
        now = datetime.now(UTC)
        return pa.table({S.ID: ids, S.DROP_ID: [drop] * len(ids),
                         S.INGESTED_AT: pa.array([now] * len(ids), pa.timestamp("us", tz="UTC"))})

    lance.write_dataset(rows([f"v{k}" for k in range(1000)], "first"), uri, enable_stable_row_ids=True)
    lance.write_dataset(rows([f"v{k}" for k in range(0, 1000, 3)], "second"), uri, mode="append")
    scans = []
    real = lance.LanceDataset.to_table
    monkeypatch.setattr(lance.LanceDataset, "to_table", lambda self, *a, **k: scans.append(k) or real(self, *a, **k))
    removed = dedup.dedup_ids(uri, [f"v{k}" for k in range(1000)])
    assert len(removed) == 334 and {r.drop_id for r in removed} == {"second"}
    assert all(k.get("filter") is None for k in scans)  # no IN lists, whole-id scans only
    t = lance.dataset(uri).to_table(columns=[S.ID, S.DROP_ID])
    assert t.num_rows == 1000 and set(t[S.DROP_ID].to_pylist()) == {"first"}
