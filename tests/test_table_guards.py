"""Guards around the table: tag names, read-only SQL, damaged manifests, bad locations and arguments."""

from __future__ import annotations

import json
from pathlib import Path

import lance
import pytest
from typer.testing import CliRunner

from mmfs_assets.cli.app import app
from mmfs_assets.ingest.describe import describe_partition
from mmfs_assets.ingest.ingest_drop import ingest_drop
from mmfs_assets.table.append import TableLocationError
from mmfs_loader.contract.health import check_table, local_versions
from tests.conftest import make_drop

runner = CliRunner()


def _run(*args):
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.fixture
def table(env, fixture_dir) -> str:
    """A table with a few versions: ingest (v2), metadata columns and values, then one more append."""
    good = sorted((fixture_dir / "good").iterdir())
    ingest_drop(make_drop(env, "g1", good[:3]), "g1", env.table_uri, properties={})
    describe_partition(env.table_uri, "g1", properties={})
    ingest_drop(make_drop(env, "g2", good[3:5]), "g2", env.table_uri, properties={})
    return env.table_uri


def _manifest(uri: str, version: int) -> Path:
    return Path(uri) / "_versions" / f"{(1 << 64) - 1 - version}.manifest"


def test_tag_names_are_validated_and_unknown_tags_listed(table):
    r = _run("snapshot", "create", "ünï")
    assert r.exit_code == 2 and "invalid tag name" in r.output
    assert _run("snapshot", "create", "a b").exit_code == 2
    assert _run("snapshot", "create", "good-1.0_x").exit_code == 0
    r = _run("sql", "SELECT COUNT(1) AS n FROM videos", "--tag", "nope")
    assert r.exit_code == 2 and "no such tag 'nope'" in r.output and "known: good-1.0_x" in r.output
    # a table that already holds a tag Lance cannot list (made before the check) still names its tags
    lance.dataset(table).tags.create("ünï", 2)
    r = _run("sql", "SELECT COUNT(1) AS n FROM videos", "--tag", "nope")
    assert r.exit_code == 2 and "no such tag 'nope'" in r.output and "good-1.0_x" in r.output
    r = _run("sql", "SELECT COUNT(1) AS n FROM videos", "--tag", "good-1.0_x", "--format", "json")
    assert json.loads(r.stdout) == [{"n": 5}]


def test_sql_is_read_only_unless_opted_in(table, tmp_path):
    latest = lance.dataset(table).version
    manifest = _manifest(table, latest)
    before = manifest.read_bytes()
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cr3t")
    attacks = [
        f"COPY (SELECT 1) TO '{manifest}'",
        f"SELECT * FROM read_text('{secret}')",
        f"SELECT * FROM read_csv('{secret}')",
        f"ATTACH '{tmp_path / 'x.db'}' AS x",
        "INSTALL httpfs",
        "LOAD httpfs",
        "SET enable_external_access = true",
        f"EXPORT DATABASE '{tmp_path / 'exp'}'",
    ]
    for q in attacks:
        r = _run("sql", q)
        assert r.exit_code == 2 and "error" in r.output, q
        assert "s3cr3t" not in r.output
    assert manifest.read_bytes() == before and not (tmp_path / "x.db").exists() and not (tmp_path / "exp").exists()
    assert lance.dataset(table).count_rows() == 5
    out = tmp_path / "out.csv"
    r = _run("sql", f"COPY (SELECT COUNT(1) AS n FROM videos) TO '{out}'", "--unsafe-allow-files")
    assert r.exit_code == 0, r.output
    assert out.read_text().splitlines() == ["n", "5"]


def test_a_damaged_latest_manifest_does_not_block_pinned_reads(table):
    from mmfs_loader import FeatureDataset, Guard

    latest = lance.dataset(table).version
    pinned = latest - 1
    expected = lance.dataset(table, version=pinned).count_rows()
    _manifest(table, latest).write_bytes(b"garbage")
    r = _run("sql", "SELECT COUNT(1) AS n FROM videos", "--version", str(pinned), "--format", "json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == [{"n": expected}]
    ds = FeatureDataset(table, version=pinned, columns=["width"], guard=Guard(drop_incomplete=True))
    assert ds.version == pinned and len(list(ds)) == 3
    h = check_table(table)
    assert h.latest_version == latest and h.newest_readable == pinned and list(h.damaged) == [latest]
    r = runner.invoke(app, ["status"])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert f"version(s) {latest}" in r.output and f"newest readable version: {pinned}" in r.output


def test_status_counts_orphan_data_files(table):
    data = Path(table) / "data"
    (data / "0000-left-by-a-killed-writer.lance").write_bytes(b"x" * 100)
    assert check_table(table).orphan_data_files == 1
    r = _run("status")
    assert r.exit_code == 0 and "orphan data files: 1" in r.output
    assert local_versions(table)[-1] == lance.dataset(table).version


def test_table_uri_on_a_foreign_folder_is_refused(env, fixture_dir, tmp_path):
    foreign = tmp_path / "home-folder"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    drop = make_drop(env, "f1", sorted((fixture_dir / "good").iterdir())[:1])
    with pytest.raises(TableLocationError, match="not a Lance table"):
        ingest_drop(drop, "f1", str(foreign), properties={})
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    (tmp_path / "empty").mkdir()  # an empty folder is fine (e.g. a mount point made for the table)
    assert ingest_drop(drop, "f1", str(tmp_path / "empty"), properties={}).new_rows == 1


def test_loader_arguments_get_clear_errors(table):
    from mmfs_loader import FeatureDataset, Guard

    for kw, msg in [
        (dict(version=-1), "version must be a positive integer"),
        (dict(version=0), "version must be a positive integer"),
        (dict(samples_per_epoch=-5), "samples_per_epoch must be an integer >= 0"),
        (dict(batch_size=0), "batch_size must be a positive integer"),
        (dict(batch_size=-2), "batch_size must be a positive integer"),
    ]:
        with pytest.raises(ValueError, match=msg):
            FeatureDataset(table, columns=["width"], guard=Guard(drop_incomplete=True), **kw)
    with pytest.raises(Exception, match="version 999 not found"):
        FeatureDataset(table, version=999, columns=["width"])


def test_a_commit_lance_gave_up_on_under_contention_is_retried(table, monkeypatch):
    """Lance's "Too many concurrent writers" (its internal retries ran out on a busy machine) left the table
    unchanged: the fill re-reads the table and commits again instead of failing the partition (CI lost a
    fill to it)."""
    import pyarrow as pa

    from mmfs_assets.table.replace import replace_columns
    from mmfs_loader.contract import schema as S
    from mmfs_loader.contract.sql import equals

    ds = lance.dataset(table)
    ids = ds.to_table(columns=[], with_row_id=True, filter=equals(S.DROP_ID, "g1"))["_rowid"]
    real, calls = lance.LanceDataset.commit, []

    def contended(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise OSError("Too many concurrent writers. Attempted 2 times, but failed on retry_timeout of 30.000 "
                          "seconds., /home/runner/work/lance/lance/rust/lance/src/io/commit.rs:130:5")
        return real(*args, **kwargs)

    monkeypatch.setattr(lance.LanceDataset, "commit", staticmethod(contended))
    values = pa.table({"_rowid": ids, "width": pa.array([7] * len(ids), pa.int32())})
    report = replace_columns(table, values, locate_filter=equals(S.DROP_ID, "g1"), properties={})
    assert len(calls) == 2 and report.attempts == 2 and report.version == ds.version + 1
    widths = lance.dataset(table).to_table(columns=["width"], filter=equals(S.DROP_ID, "g1"))["width"]
    assert widths.to_pylist() == [7] * len(ids)
