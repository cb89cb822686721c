"""Operating the store: lookup indices, snapshots with manifests, rollback, lineage, maintenance, search."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from datetime import timedelta
from pathlib import Path

import lance
import numpy as np
import pytest
from typer.testing import CliRunner

from mmfs_assets.cli.app import app
from mmfs_assets.features import discover
from mmfs_assets.store import snapshots
from mmfs_assets.store.lineage import lineage
from mmfs_assets.store.maintain import maintain
from mmfs_assets.store.search import Query, SearchError, by_caption, by_text, like, nearest
from mmfs_assets.table.indices import ensure_search_indices, index_status
from mmfs_loader import FeatureDataset, Guard
from mmfs_loader.contract.schema import producer_model
from mmfs_loader.contract.sql import equals
from mmfs_loader.contract.table import TableRef
from tests.features_util import B_VIDEOS, fill, tiny, two_drop_table

FEATURES = {f.name: f for f in discover()}
runner = CliRunner()


def _run(*args: str):
    return runner.invoke(app, list(args))


@pytest.fixture(scope="module")
def base(tmp_path_factory, fixture_dir) -> Path:
    """Drop A (good fixtures) and drop B (two videos), metadata filled, no features yet."""
    return two_drop_table(tmp_path_factory.mktemp("store"), sorted((fixture_dir / "good").iterdir()), B_VIDEOS)


@pytest.fixture
def table(base, tmp_path, monkeypatch, model_dir) -> str:
    dst = tmp_path / "videos.lance"
    shutil.copytree(base, dst)
    monkeypatch.setenv("MMFS_TABLE_URI", str(dst))
    monkeypatch.setenv("MMFS_MODEL_PROFILE", "tiny")
    monkeypatch.setenv("MMFS_MODEL_DIR", str(model_dir))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    return str(dst)


def _clip(table: str, key: str, model_dir: Path):
    f = FEATURES["clip_embedding"]
    return fill(table, key, f, tiny(f, model_dir, MMFS_CLIP_FRAMES="2"))


def _samples(uri: str, **kw) -> dict[str, list[float]]:
    ds = FeatureDataset(uri, columns=["clip_embedding"], guard=Guard(allow_mixed_producers=True, drop_incomplete=True), **kw)
    return {r["id"]: np.asarray(r["clip_embedding"]).round(6).tolist() for r in ds}


def test_lookups_use_the_drop_and_id_indices(table):
    ds = lance.dataset(table)
    names = {s["name"]: s for s in index_status(ds)}
    assert {"drop_id_bitmap", "id_btree"} <= set(names)
    assert names["drop_id_bitmap"]["unindexed_rows"] == 0  # each ingest folds its fragments in
    plan = ds.scanner(columns=["id"], filter=equals("drop_id", "B")).explain_plan()
    assert "ScalarIndexQuery" in plan and "drop_id_bitmap" in plan
    one = ds.to_table(columns=["id"], limit=1)["id"][0].as_py()
    assert "id_btree" in ds.scanner(columns=["id"], filter=equals("id", one)).explain_plan()


def test_snapshot_refuses_incomplete_features_then_stores_a_manifest(table, model_dir):
    _clip(table, "A", model_dir)
    with pytest.raises(snapshots.SnapshotRefused) as e:
        snapshots.create(table, "s1", require=["clip_embedding", "depth"])
    text = str(e.value)
    assert "clip_embedding: 2 rows without values, in drops B (2)" in text and "depth:" in text
    assert "s1" not in lance.dataset(table).tags.list()  # nothing tagged
    _clip(table, "B", model_dir)
    m = snapshots.create(table, "s1", require=["clip_embedding"])
    ds = lance.dataset(table)
    assert m.version == ds.version and m.rows == ds.count_rows()
    assert m.partitions == {"A": m.rows - 2, "B": 2} and "video" not in m.columns
    producers = m.groups["clip_embedding"].producers  # one model (each row's sampling may differ: auto)
    assert sum(producers.values()) == m.rows and len({producer_model(p) for p in producers}) == 1
    assert all(p.startswith("clip_embedding:clip-v1") for p in producers)
    shown = snapshots.show(table, "s1")
    assert shown.stored and shown.record() == m.record()
    # a second producer for the same feature is refused too
    f = FEATURES["clip_embedding"]
    fill(table, "B", f, tiny(f, model_dir, MMFS_CLIP_FRAMES="3"))
    with pytest.raises(snapshots.SnapshotRefused, match="clip_embedding: 2 producers"):
        snapshots.create(table, "s2", require=["clip_embedding"])
    # CLI: list, show --format json, a tag is never moved, delete
    r = _run("snapshot", "list", "--format", "json")
    assert [x["name"] for x in json.loads(r.stdout)] == ["s1"]
    r = _run("snapshot", "show", "s1", "--format", "json")
    assert json.loads(r.stdout)["version"] == m.version
    r = _run("snapshot", "create", "s1")
    assert r.exit_code == 2 and "never moved" in r.output
    r = _run("snapshot", "create", "s3", "--require", "depth")
    assert r.exit_code == 2 and "depth: no values in version" in r.output and "never filled" in r.output
    assert _run("snapshot", "delete", "s1").exit_code == 0
    assert "s1" not in lance.dataset(table).tags.list()
    assert _run("snapshot", "show", "s1").exit_code == 2


def test_rollback_reads_as_the_target_and_names_what_it_undoes(table, model_dir):
    _clip(table, "A", model_dir)
    snapshots.create(table, "before-b")
    before = _samples(table, tag="before-b")
    _clip(table, "B", model_dir)
    latest = lance.dataset(table).version
    r = _run("rollback", "--to", "before-b", "--dry-run", "--format", "json")
    plan = json.loads(r.stdout)
    assert plan["undone"] == [{"asset": "clip_embedding", "partition": "B", "what": "filled 2 -> 0, errors 0 -> 0, producers change"}]
    assert lance.dataset(table).version == latest  # a dry run changes nothing
    r = _run("rollback", "--to", "before-b")
    assert r.exit_code == 0, r.output
    ds = lance.dataset(table)
    assert ds.version == latest + 1 and "before-b" in ds.tags.list()  # a new commit; history and tags kept
    assert _samples(table) == before  # the loader over the latest version reads what it read at the target
    assert lance.dataset(table, version=latest).count_rows("clip_embedding IS NOT NULL") == len(before) + 2


def test_rollback_refuses_while_a_writer_runs(table, model_dir, tmp_path, monkeypatch):
    """A real run of a writing asset, in progress in this process: rollback refuses and names it."""
    import dagster as dg

    from mmfs_assets.instance.writers import active_writers

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dh"))
    (tmp_path / "dh").mkdir()
    started, release = threading.Event(), threading.Event()

    @dg.asset(name="clip_embedding")
    def writer() -> None:
        started.set()
        release.wait(60)

    from mmfs_assets.instance.home import open_instance

    _clip(table, "A", model_dir)
    snapshots.create(table, "t0")
    _clip(table, "B", model_dir)
    with open_instance() as instance:
        t = threading.Thread(target=lambda: dg.materialize([writer], instance=instance))
        t.start()
        try:
            assert started.wait(60)
            busy = active_writers(instance)
            assert len(busy) == 1 and "clip_embedding" in busy[0] and "STARTED" in busy[0]
            r = _run("rollback", "--to", "t0")
            assert r.exit_code == 1 and "being written by run" in r.output
            assert "t0" in r.output or lance.dataset(table).version > snapshots.show(table, "t0").version
        finally:
            release.set()
            t.join()
        assert active_writers(instance) == []
    r = _run("rollback", "--to", "t0")
    assert r.exit_code == 0 and "clip_embedding" in r.stdout and "marked 1 asset partition" in r.stdout, r.output


def test_lineage_names_versions_and_runs_and_survives_cleanup(table, model_dir):
    f = FEATURES["clip_embedding"]
    fill_feature_props = {"mmfs.asset": f.name, "mmfs.run_id": "run-clip-A", "mmfs.partition": "A"}
    from mmfs_assets.engine.fill import fill_feature

    fill_feature(table, "A", f, tiny(f, model_dir, MMFS_CLIP_FRAMES="2"), properties=fill_feature_props)
    v, groups = lineage(table)
    g = groups["clip_embedding"]
    assert g.run_ids == ["run-clip-A"] and g.versions and max(g.versions) <= v
    assert set(g.partitions) == {"A", "B"} and g.partitions["B"] == {}  # B not filled
    assert sum(g.producers.values()) == sum(n for d in g.partitions.values() for n in d.values())
    assert groups["ingest"].producers["videos"] == lance.dataset(table).count_rows()
    versions = list(g.versions)
    rep = maintain(table, retention=timedelta(0))
    assert rep.versions_removed > 0 and rep.lineage_archived > 0
    with pytest.raises(ValueError):
        lance.dataset(table, version=versions[0]).count_rows()  # the version itself is gone
    assert lineage(table)[1]["clip_embedding"].versions == versions  # its record is not
    r = _run("lineage", "--format", "json")
    assert json.loads(r.stdout)["groups"]["clip_embedding"]["run_ids"] == ["run-clip-A"]


def test_maintenance_keeps_snapshots_compacts_and_removes_orphans(table, model_dir):
    _clip(table, "A", model_dir)
    snapshots.create(table, "pinned")
    before = _samples(table, tag="pinned")
    frags_before = len(lance.dataset(table).get_fragments())
    orphan = Path(table) / "data" / "0123456789abcdef0123456789abcdef.lance"
    orphan.write_bytes(b"left by a killed writer")
    young = Path(table) / "data" / "fedcba9876543210fedcba9876543210.lance"
    young.write_bytes(b"a commit in flight")
    old = time.time() - 7200
    os.utime(orphan, (old, old))
    dry = maintain(table, dry_run=True, retention=timedelta(0))
    assert dry.fragments_compacted > 0 and dry.orphans_removed == 1 and orphan.exists()
    rep = maintain(table, retention=timedelta(0))
    assert rep.fragments_compacted > 0 and rep.fragments_written < rep.fragments_compacted
    assert len(lance.dataset(table).get_fragments()) < frags_before
    assert rep.orphans_removed == 1 and not orphan.exists() and young.exists()
    assert _samples(table, tag="pinned") == before  # the snapshot reads identical samples
    assert _samples(table) == before
    # a writer is running: no compaction, no orphan removal
    busy = maintain(table, writers=lambda: ["run abc (clip_embedding [B])"], retention=timedelta(0))
    assert busy.fragments_compacted == 0 and any("being written" in s for s in busy.skipped)
    assert any(s.startswith("search indices") for s in busy.skipped)


def test_large_video_fragments_are_not_compacted(table):
    rep = maintain(table, dry_run=True, blob_limit=1)  # every fragment holds more than 1 byte of video
    assert rep.fragments_compacted == 0 and rep.blob_fragments_kept == len(lance.dataset(table).get_fragments())


def test_a_fill_during_maintenance_loses_nothing(table, model_dir):
    stop = threading.Event()
    errors: list[BaseException] = []

    def churn():
        while not stop.is_set():
            try:
                maintain(table, retention=timedelta(0), target_rows=10_000)
            except BaseException as e:  # noqa: BLE001
                errors.append(e)
                return

    t = threading.Thread(target=churn)
    t.start()
    try:
        _clip(table, "A", model_dir)
        _clip(table, "B", model_dir)
    finally:
        stop.set()
        t.join()
    assert not errors, errors
    ds = lance.dataset(table)
    assert ds.count_rows("clip_embedding_producer IS NULL") == 0


def test_search_exact_and_indexed(table, model_dir):
    _clip(table, "A", model_dir)
    _clip(table, "B", model_dir)
    ref = TableRef(table)
    ds = lance.dataset(table)
    rows = ds.to_table(columns=["id", "clip_embedding"], filter="clip_embedding IS NOT NULL").to_pylist()
    target = rows[0]
    hits = like(ref, target["id"], Query(k=3))
    assert hits and target["id"] not in [h["id"] for h in hits]
    dists = [h["distance"] for h in hits]
    assert dists == sorted(dists)
    exact = nearest(ds, "clip_embedding", np.array(target["clip_embedding"]), Query(k=1), exact=True)
    assert exact[0]["id"] == target["id"] and exact[0]["distance"] == pytest.approx(0, abs=1e-5)
    # an IVF_PQ index once the table is "large" (threshold lowered): the video is still its own nearest
    rep = ensure_search_indices(ref, vector_min_rows=4)
    assert "clip_embedding_ivf_pq" in rep.created and "caption" not in rep.skipped
    ds = lance.dataset(table)
    assert nearest(ds, "clip_embedding", np.array(target["clip_embedding"]), Query(k=1))[0]["id"] == target["id"]
    with pytest.raises(SearchError, match="no video with id"):
        like(ref, "nope", Query())


def test_text_search_uses_the_producers_model_or_refuses(table, model_dir, monkeypatch):
    from mmfs_assets.settings import Settings
    from mmfs_assets.store.text_encoder import settings_encoder

    _clip(table, "A", model_dir)
    hits = by_text(TableRef(table), "a red car", Query(k=2), settings_encoder(Settings.from_env()))
    assert len(hits) == 2 and hits[0]["distance"] <= hits[1]["distance"]
    r = _run("search", "a red car", "-k", "2", "--format", "json")
    assert r.exit_code == 0, r.output
    assert [h["id"] for h in json.loads(r.stdout)] == [h["id"] for h in hits]
    # stored vectors from another model: refused, naming the producer they need
    other = Path(model_dir) / "other-clip"
    if not other.exists():
        other.mkdir()
        from mmfs_assets.features import tiny

        tiny.clip(512, other)
        (other / "open_clip_model.safetensors").write_bytes((other / "open_clip_model.safetensors").read_bytes()[:-4] + b"\0\0\0\0")
    monkeypatch.setenv("MMFS_MODEL_PROFILE", "pretrained")
    monkeypatch.setenv("MMFS_CLIP_MODEL", str(other))
    r = _run("search", "a red car")
    assert r.exit_code != 0 and "were made by" in r.output and "MMFS_CLIP_MODEL" in r.output


def test_caption_search(table, model_dir):
    f = FEATURES["caption"]
    fill(table, "B", f, tiny(f, model_dir))
    ref = TableRef(table)
    with pytest.raises(SearchError, match="no full-text index"):
        by_caption(ref, "x", Query())
    ensure_search_indices(ref)
    ds = lance.dataset(table)
    caps = [c for c in ds.to_table(columns=["caption"], filter="caption IS NOT NULL")["caption"].to_pylist() if c.split()]
    word = caps[0].split()[0]
    hits = by_caption(ref, word, Query(k=5))
    assert hits and all(word.lower() in (h["caption"] or "").lower() for h in hits)


def test_sql_filters_on_embedding_columns(table, model_dir):
    """DuckDB pushes `clip_embedding IS NOT NULL` down as a filter pylance 14 cannot convert: it still works."""
    _clip(table, "B", model_dir)
    r = _run("sql", "SELECT file_name FROM videos WHERE clip_embedding IS NOT NULL AND drop_id = 'B' ORDER BY 1",
             "--format", "json")
    assert r.exit_code == 0, r.output
    assert [x["file_name"] for x in json.loads(r.stdout)] == ["b1.mp4", "b2.mp4"]
    r = _run("sql", "SELECT count(*) AS n FROM videos WHERE clip_embedding IS NULL", "--format", "json")
    assert json.loads(r.stdout) == [{"n": lance.dataset(table).count_rows() - 2}]
