"""Drops in a bucket (``MMFS_DROP_DIR=s3://...``) on a real S3-compatible server (moto on 127.0.0.1)."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import lance
import pytest

from mmfs_assets.cli.run import MaterializeError, materialize_drop
from mmfs_assets.definitions import defs
from mmfs_assets.defs.ingest.drop_sensor import drop_sensor
from mmfs_assets.ingest.drop_source import drop_source
from mmfs_assets.ingest.drops import ScanState
from mmfs_assets.ingest.ingest_drop import ingest_drop
from mmfs_assets.ingest.object_drops import FULL_LIST_INTERVAL_S, ObjectDrops
from mmfs_assets.ingest.s3_client import s3_client
from mmfs_assets.resources import DropFolderResource
from mmfs_assets.settings import Settings
from mmfs_loader import FeatureDataset
from mmfs_loader.contract import schema as S
from tests.moto_server import moto_s3

ROOT = "s3://mmfs/incoming/"


@pytest.fixture(scope="module")
def s3():
    with moto_s3("mmfs") as options:
        yield options


@pytest.fixture
def bucket(s3):
    """The server's options and a client; the prefix is emptied after each test."""
    client = s3_client(s3)
    yield s3, client
    for page in client.get_paginator("list_objects_v2").paginate(Bucket="mmfs"):
        for obj in page.get("Contents", []):
            client.delete_object(Bucket="mmfs", Key=obj["Key"])


def put_drop(client, name: str, files: dict[str, bytes | Path], ready: bool = True, prefix: str = "incoming/") -> None:
    for rel, body in files.items():
        data = body.read_bytes() if isinstance(body, Path) else body
        client.put_object(Bucket="mmfs", Key=f"{prefix}{name}/{rel}", Body=data)
    if ready:
        client.put_object(Bucket="mmfs", Key=f"{prefix}{name}/_READY", Body=b"")


def test_listing_follows_the_folder_rules(bucket, fixture_dir):
    opts, client = bucket
    good = sorted((fixture_dir / "good").iterdir())[:2]
    put_drop(client, "d1", {
        good[0].name: good[0], f"sub/{good[1].name}": good[1],
        ".hidden.mp4": b"x", "_staging/part.mp4": b"x", "sub/_marker": b"", "odd//name.mp4": b"x",
        "spaces and ünicode.mp4": b"y", "sub/": b"",
    })
    drop = drop_source(ROOT, opts).open("d1")
    files, skipped = drop.list_files()
    assert [f.relpath for f in files] == [good[0].name, "spaces and ünicode.mp4", f"sub/{good[1].name}"]
    assert all(f.version for f in files)  # the listed ETag the reads are pinned to
    assert [(s.relpath, "not a plain path" in s.reason) for s in skipped] == [("odd//name.mp4", True)]
    assert drop.file_uri(files[0]) == f"s3://mmfs/incoming/d1/{good[0].name}"
    src = drop_source(ROOT, opts)
    assert "no objects under it" in src.refusal("missing")
    assert "not a safe partition key" in src.refusal("bad name")
    assert src.refusal("d1") is None


def test_sensor_registers_ready_drops_and_lists_with_a_cursor(bucket, instance):
    opts, client = bucket
    put_drop(client, "2026-01-a", {"v.mp4": b"x"})
    put_drop(client, "2026-01-b", {"v.mp4": b"x"}, ready=False)  # written now: not quiet for an hour
    put_drop(client, "2025 bad name", {"v.mp4": b"x"})
    put_drop(client, "_staging", {"v.mp4": b"x"})

    def tick(cursor, quiet=3600.0):
        ctx = dg.build_sensor_context(
            instance=instance, cursor=cursor, definitions=defs,
            resources={"drop_folder": DropFolderResource(root=ROOT, quiet_seconds=quiet, storage_options=opts)})
        return drop_sensor(ctx)

    r1 = tick(None)
    assert [k for r in r1.dynamic_partitions_requests for k in r.partition_keys] == ["2026-01-a"]
    assert [r.run_key for r in r1.run_requests] == ["ingest:2026-01-a"]
    cursor = json.loads(r1.cursor)
    assert cursor["refused"] == ["2025 bad name"]
    assert cursor["scan"]["after"] == "2026-01-a"  # not past 2026-01-b, which is still being written
    assert not any(v in r1.cursor for v in opts.values() if v not in ("true", "us-east-1"))  # no secret in the cursor
    instance.add_dynamic_partitions("drops", ["2026-01-a"])
    r2 = tick(r1.cursor)
    assert not r2.run_requests and "1 still being written" in r2.skip_reason.skip_message
    assert "'2025 bad name'" in r2.skip_reason.skip_message
    r3 = tick(r2.cursor, quiet=0.0)  # quiet period over: registered, and the cursor moves past it
    assert [r.partition_key for r in r3.run_requests] == ["2026-01-b"]
    assert json.loads(r3.cursor)["scan"]["after"] == "2026-01-b"
    # the incremental listing starts after the cursor: registered drops' names are not listed again
    src = ObjectDrops(ROOT, opts)
    state = ScanState.of(json.loads(r3.cursor)["scan"])
    put_drop(client, "2026-02-a", {"v.mp4": b"x"})
    put_drop(client, "2025-12-late", {"v.mp4": b"x"})  # sorts below the cursor
    scan, state2 = src.scan({"2026-01-a", "2026-01-b"}, 3600.0, state, now=state.full_at + 1)
    assert scan.listed == 2 and scan.ready == ["2026-02-a"] and not scan.full  # and '_staging', skipped
    scan, _ = src.scan({"2026-01-a", "2026-01-b", "2026-02-a"}, 3600.0, state2,
                       now=state.full_at + FULL_LIST_INTERVAL_S + 1)  # the periodic full listing finds it
    assert scan.full and scan.ready == ["2025-12-late"]


def test_ingest_pins_reads_to_the_listing(bucket, fixture_dir, tmp_path):
    """An object rewritten between the listing and its read is a skip entry; its old bytes are not taken."""
    opts, client = bucket
    good = sorted((fixture_dir / "good").iterdir())[:3]
    put_drop(client, "race", {f.name: f for f in good})
    drop = drop_source(ROOT, opts).open("race")

    def rewrite(f):
        if f.relpath == good[1].name:
            client.put_object(Bucket="mmfs", Key=f"incoming/race/{f.relpath}", Body=good[2].read_bytes() + b"tail")

    rep = ingest_drop(drop, "race", str(tmp_path / "t.lance"), properties={}, before_read=rewrite)
    assert rep.new_rows == 2
    assert [(s.relpath, "changed after the drop was listed" in s.reason) for s in rep.skipped] == [(good[1].name, True)]
    ds = lance.dataset(str(tmp_path / "t.lance"))
    rows = ds.to_table(columns=[S.FILE_NAME, S.SOURCE_URI, S.VIDEO_STORAGE]).to_pylist()
    assert sorted(r[S.FILE_NAME] for r in rows) == [good[0].name, good[2].name]
    assert {r[S.VIDEO_STORAGE] for r in rows} == {"inline"}
    rid = ds.to_table(columns=[], filter=f"{S.FILE_NAME} = '{good[0].name}'", with_row_id=True)["_rowid"][0].as_py()
    assert ds.take_blobs(S.VIDEO, ids=[rid])[0].readall() == good[0].read_bytes()  # inline: the bytes copied in


def test_pointer_drops_in_a_bucket_end_to_end(bucket, fixture_dir, tmp_path, monkeypatch, instance, model_dir):
    """Pointer mode: the table holds s3:// URIs; metadata, a feature and the loader read them with the same options."""
    opts, client = bucket
    good = sorted((fixture_dir / "good").iterdir())[:3]
    put_drop(client, "p1", {**{f.name: f for f in good}, "garbage.mp4": fixture_dir / "bad" / "garbage.mp4"})
    monkeypatch.setenv("MMFS_MODEL_PROFILE", "tiny")
    monkeypatch.setenv("MMFS_MODEL_DIR", str(model_dir))
    monkeypatch.setenv("MMFS_TABLE_URI", "s3://mmfs/tables/videos.lance")
    monkeypatch.setenv("MMFS_DROP_DIR", ROOT)
    monkeypatch.setenv("MMFS_VIDEO_STORAGE", "pointer")
    monkeypatch.setenv("MMFS_STORAGE_OPTIONS", json.dumps(opts))
    settings = Settings.from_env()
    with pytest.raises(MaterializeError, match="no objects under it"):
        materialize_drop("nope", None, instance, settings)
    r = materialize_drop("p1", ["videos", "video_metadata", "clip_embedding"], instance, settings)
    assert r.success
    ds = lance.dataset(settings.table_uri, storage_options=opts)
    rows = {x[S.FILE_NAME]: x for x in ds.to_table(columns=[S.FILE_NAME, S.SOURCE_URI, S.VIDEO_STORAGE, "num_frames",
                                                            "metadata_error", "clip_embedding_error"]).to_pylist()}
    assert set(rows) == {*(f.name for f in good), "garbage.mp4"}
    assert all(x[S.VIDEO_STORAGE] == "pointer" and x[S.SOURCE_URI].startswith("s3://mmfs/incoming/p1/")
               for x in rows.values())
    assert all(rows[f.name]["num_frames"] > 0 and rows[f.name]["clip_embedding_error"] is None for f in good)
    assert rows["garbage.mp4"]["metadata_error"]
    # the loader decodes clips of pointer rows straight from the bucket
    loader_ds = FeatureDataset(settings.table_uri, version=ds.version, columns=[S.FILE_NAME], filter="metadata_error IS NULL",
                               clip={"frames": 2, "size": 32}, storage_options=opts)
    got = list(loader_ds)
    assert len(got) == 3 and all(bool(s["clip_ok"]) and s["frames"].shape[0] == 2 for s in got)


def test_the_demo_drop_goes_to_a_bucket(bucket):
    from mmfs_assets.cli.demo import make_demo_drop

    opts, client = bucket
    settings = Settings(drop_dir=ROOT, storage_options=opts)
    first, local = make_demo_drop(settings, 1, with_bad=False)
    second, _ = make_demo_drop(settings, 1, with_bad=False)
    assert (first, second) == ("demo-001", "demo-002")
    src = drop_source(ROOT, opts)
    assert src.refusal(first) is None and src.is_ready(first, quiet_seconds=3600)  # by its _READY
    files, _ = src.open(first).list_files()
    assert sorted(f.relpath for f in files) == sorted(p.name for p in local.iterdir())
