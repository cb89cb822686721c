"""Concurrent writers on the one table: ingests and metadata fills of other drops, in parallel processes."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import lance

from mmfs_assets.ingest.describe import describe_partition
from mmfs_assets.ingest.ingest_drop import ingest_drop
from mmfs_loader.contract import schema as S
from tests.conftest import make_drop


def _ingest(uri: str, drop: str, key: str) -> int:
    return ingest_drop(Path(drop), key, uri, properties={"mmfs.asset": "videos"}).new_rows


def _describe(uri: str, key: str) -> int:
    # one commit per row: many small commits racing the other writers
    return describe_partition(uri, key, properties={"mmfs.asset": "video_metadata"}, chunk_rows=1).rows_written


def _unique_drop(env, key: str, files: list[Path]) -> Path:
    """A drop whose files are the fixtures with a per-drop tag appended, so its content is new."""
    drop = make_drop(env, key, files)
    for f in files:
        with open(drop / f.name, "ab") as fh:
            fh.write(f"drop {key}".encode())
    return drop


def test_fills_and_ingests_in_parallel_lose_nothing(env, fixture_dir):
    files = sorted((fixture_dir / "good").iterdir()) + sorted((fixture_dir / "bad").iterdir())
    files = [f for f in files if f.stat().st_size > 0]
    chunks = [files[i::3] for i in range(3)]
    uri = env.table_uri
    with mp.get_context("spawn").Pool(3) as pool:
        for rnd in range(3):
            # two drops already ingested get their metadata filled (one commit per row) while a third is
            # ingested, all at once in three processes
            a, b, c = (f"r{rnd}-a", f"r{rnd}-b", f"r{rnd}-c")
            for key, chunk in zip((a, b), chunks[:2]):
                assert _ingest(uri, str(_unique_drop(env, key, chunk)), key) == len(chunk)
            drop_c = _unique_drop(env, c, chunks[2])
            jobs = [
                pool.apply_async(_describe, (uri, a)),
                pool.apply_async(_describe, (uri, b)),
                pool.apply_async(_ingest, (uri, str(drop_c), c)),
            ]
            assert [j.get(timeout=300) for j in jobs] == [len(chunks[0]), len(chunks[1]), len(chunks[2])]
    ds = lance.dataset(uri)
    t = ds.to_table(columns=[S.DROP_ID, S.ID, S.METADATA.producer_column])
    assert len(t) == 3 * len(files)
    assert len(set(t[S.ID].to_pylist())) == len(t)
    filled = {(r[S.DROP_ID]) for r in t.to_pylist() if r[S.METADATA.producer_column] is not None}
    assert filled == {f"r{i}-{x}" for i in range(3) for x in "ab"}
    assert ds.count_rows(filter="drop_id LIKE 'r%-c'") == 3 * len(chunks[2])
    # one commit per described row, per round: none was lost to a race
    ops = [ds.read_transaction(v["version"]).transaction_properties.get("mmfs.op") for v in ds.versions()[1:]]
    assert ops.count("replace") == 3 * (len(chunks[0]) + len(chunks[1]))
