"""The table on an S3-compatible server (moto, started on 127.0.0.1 by the test, stopped by its pid)."""

from __future__ import annotations

import lance
import pytest

from mmfs_assets.cli.run import materialize_drop
from mmfs_assets.settings import Settings
from mmfs_loader.contract import schema as S
from mmfs_loader.contract.query import sql
from mmfs_loader.contract.sql import equals
from tests.conftest import make_drop
from tests.moto_server import moto_s3


@pytest.fixture
def s3_server():
    with moto_s3("mmfs") as options:
        yield options


def test_ingest_and_metadata_on_s3(tmp_path, monkeypatch, fixture_dir, instance, s3_server, model_dir):
    import json

    monkeypatch.setenv("MMFS_MODEL_PROFILE", "tiny")
    monkeypatch.setenv("MMFS_MODEL_DIR", str(model_dir))
    monkeypatch.setenv("MMFS_TABLE_URI", "s3://mmfs/prod/videos.lance")
    monkeypatch.setenv("MMFS_DROP_DIR", str(tmp_path / "drops"))
    monkeypatch.setenv("MMFS_STORAGE_OPTIONS", json.dumps(s3_server))
    settings = Settings.from_env()
    assert settings.table_uri == "s3://mmfs/prod/videos.lance"
    good = sorted((fixture_dir / "good").iterdir())[:3]
    make_drop(settings, "s3-1", good + [fixture_dir / "bad" / "garbage.mp4"])
    assert materialize_drop("s3-1", None, instance, settings).success
    assert materialize_drop("s3-1", None, instance, settings).success  # re-run: nothing new
    ds = lance.dataset(settings.table_uri, storage_options=s3_server)
    assert ds.count_rows() == 4
    assert ds.count_rows(filter="metadata_error IS NULL AND num_frames > 0") == 3
    rid = ds.to_table(columns=[], filter=equals(S.FILE_NAME, good[0].name), with_row_id=True)["_rowid"][0].as_py()
    assert ds.take_blobs(S.VIDEO, ids=[rid])[0].readall() == good[0].read_bytes()
    t = sql(settings.table_uri, "SELECT COUNT(1) AS n FROM videos WHERE metadata_error IS NOT NULL",
            storage_options=s3_server)
    assert t.to_pylist() == [{"n": 1}]
    # the feature fills wrote their column files through the object store too
    for g in ("clip_embedding", "depth", "caption", "quality"):
        assert ds.count_rows(filter=f"{g}_producer IS NOT NULL AND {g}_error IS NULL") == 3, g


def test_cli_errors_on_object_storage(tmp_path, monkeypatch, s3_server):
    """A bucket that does not exist: one message and a hint per command, no traceback (was 43 lines)."""
    import json

    from typer.testing import CliRunner

    from mmfs_assets.cli.app import app

    monkeypatch.setenv("MMFS_TABLE_URI", "s3://no-such-bucket/prod/videos.lance")
    monkeypatch.setenv("MMFS_STORAGE_OPTIONS", json.dumps(s3_server))
    monkeypatch.setenv("MMFS_DROP_DIR", str(tmp_path / "drops"))
    for args in (["status"], ["snapshot", "create", "x"], ["sql", "SELECT 1 FROM videos"]):
        r = CliRunner().invoke(app, args)
        out = " ".join(r.output.split())
        assert r.exit_code in (1, 2) and "Traceback" not in r.output and ".rs:" not in r.output, r.output
        assert len(r.output.strip().splitlines()) <= 6, r.output
        assert "s3://no-such-bucket/prod/videos.lance" in out and "hint:" in out, r.output
        assert "testing" not in r.output  # no secret in the message


def test_the_loader_fills_the_node_cache_before_reading_from_an_object_store(s3_server, tmp_path, monkeypatch):
    """On an object store a random take costs about a request per row, so the node cache (read in offset
    order) is filled before the first batch: no block is read by take, and the samples are the same."""
    import torch

    from mmfs_loader import FeatureDataset, Reading
    from tests.loader_util import make_large_table

    monkeypatch.setenv("MMFS_LOADER_CACHE_DIR", str(tmp_path / "node"))
    uri = "s3://mmfs/loader/t.lance"
    make_large_table(uri, 600, dim=64, video_bytes=64, fragment_rows=200, storage_options=s3_server)
    kw = dict(columns=["clip_embedding", "height"], shuffle=True, seed=1, batch_size=50, storage_options=s3_server)
    cached = FeatureDataset(uri, **kw)
    taken = FeatureDataset(uri, reading=Reading(cache_bytes=0), **kw)
    a, b = list(cached), list(taken)
    assert cached._reader.reads_by_take == 0 and cached._reader.reads_from_cache >= 1
    assert taken._reader.reads_by_take >= 1
    assert [x["id"] for x in a] == [x["id"] for x in b] and sum(len(x["id"]) for x in a) == 600
    assert all(torch.equal(x["clip_embedding"], y["clip_embedding"]) for x, y in zip(a, b))
