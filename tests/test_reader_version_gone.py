"""A reader pinned to a snapshot whose snapshot is deleted keeps its data (its lease keeps the version from
maintenance) or, without a lease, stops with a clear error once maintenance removes the version's files:
it never yields empty clips."""

from __future__ import annotations

import gc
from datetime import timedelta

import pytest

from mmfs_assets import samples
from mmfs_assets.ingest.describe import describe_partition
from mmfs_assets.ingest.ingest_drop import ingest_drop
from mmfs_assets.store import snapshots
from mmfs_assets.store.maintain import maintain
from mmfs_loader import FeatureDataset, Reading, VersionGoneError
from mmfs_loader.contract import leases
from mmfs_loader.contract.table import TableRef


def _table(tmp_path) -> str:
    """Drop A (16 videos, small fragments) snapshotted as ``t0``, then drop B: maintenance will compact."""
    uri = str(tmp_path / "t.lance")
    for key, n in (("A", 16), ("B", 2)):
        drop = tmp_path / key
        drop.mkdir()
        for i in range(n):
            samples.write_video(drop / f"{key}{i}.mp4", samples.Spec(f"{key}{i}", 64, 48, 10, 1.0 + 0.1 * i + (key == "B")))
        ingest_drop(drop, key, uri, properties={"mmfs.asset": "videos"}, fragment_rows=2)  # small fragments
        describe_partition(uri, key, properties={"mmfs.asset": "video_metadata"})
        if key == "A":
            snapshots.create(uri, "t0")
    return uri


def _reader(uri: str, hold: bool) -> FeatureDataset:
    return FeatureDataset(uri, tag="t0", columns=["file_name"], clip=dict(frames=2, size=32), seed=1, batch_size=1,
                          reading=Reading(cache_bytes=0, fetch_size=1, hold_version=hold))  # a row at a time


def test_a_reader_keeps_its_version_while_it_lives(tmp_path):
    """Snapshot deleted and maintenance run mid-epoch: the reader's lease kept the version, every clip decodes;
    once the reader is gone, so is its lease."""
    uri = _table(tmp_path)
    ds = _reader(uri, hold=True)
    pinned = ds.version
    it = iter(ds)
    assert bool(next(it)["clip_ok"])
    snapshots.delete(uri, "t0")
    rep = maintain(uri, retention=timedelta(0), orphan_grace=timedelta(0))
    assert rep.versions_removed > 0
    rest = list(it)
    assert len(rest) == 15 and all(bool(s["clip_ok"]) for s in rest)
    assert [lease.version for lease in leases.active(TableRef(uri))] == [pinned]
    del it, ds, rest
    gc.collect()
    assert leases.active(TableRef(uri)) == []


def test_a_reader_without_a_lease_stops_with_a_clear_error_when_its_version_is_removed(tmp_path):
    uri = _table(tmp_path)
    ds = _reader(uri, hold=False)
    it = iter(ds)
    assert bool(next(it)["clip_ok"])
    snapshots.delete(uri, "t0")
    rep = maintain(uri, retention=timedelta(0), orphan_grace=timedelta(0))
    assert rep.fragments_compacted > 0 and rep.versions_removed > 0  # the files under the reader are gone
    with pytest.raises(VersionGoneError, match="was removed while this reader was reading it"):
        rest = list(it)
        assert all(bool(s["clip_ok"]) for s in rest), "a reader yielded empty clips instead of stopping"
