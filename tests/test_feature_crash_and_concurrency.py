"""Feature fills under stress: SIGKILL mid-partition, and many writers on one table at once."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lance

from mmfs_assets.features import discover
from mmfs_assets.ingest.describe import describe_partition
from mmfs_assets.ingest.ingest_drop import ingest_drop
from mmfs_loader.contract import schema as S
from mmfs_loader.contract.sql import equals
from tests.conftest import make_drop
from tests.features_util import build_table, fill, fill_by_name, tiny

FEATURES = {f.name: f for f in discover()}
ROOT = Path(__file__).resolve().parents[1]


def _fill_commits(uri: str, asset: str) -> int:
    ds = lance.dataset(uri)
    return sum(ds.read_transaction(v["version"]).transaction_properties.get("mmfs.asset") == asset for v in ds.versions()[1:])


def test_sigkill_mid_partition_loses_at_most_one_chunk(env, fixture_dir, model_dir, tmp_path):
    good = sorted((fixture_dir / "good").iterdir())
    drop = make_drop(env, "K", good)
    uri = env.table_uri
    build_table(uri, {"K": drop}, fragment_rows=2)
    feature = FEATURES["quality"]
    producer = tiny(feature, model_dir).producer
    log = tmp_path / "computed.log"
    log.touch()
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.crash_child", uri, "K", str(model_dir), str(log), "2"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        deadline = time.time() + 120
        while _fill_commits(uri, "quality") < 2:  # two chunks committed: kill it in the middle of the third
            assert child.poll() is None, "the fill finished or died before it could be killed"
            assert time.time() < deadline
            time.sleep(0.05)
        time.sleep(0.5)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL

    ds = lance.dataset(uri)  # no partial commit is visible: every fragment is all filled or all empty
    t = ds.to_table(columns=["quality_producer", "sharpness"], with_row_id=True, with_row_address=True,
                    filter=equals(S.DROP_ID, "K"))
    by_frag: dict[int, set] = {}
    for _rid, addr, p, v in zip(t["_rowid"].to_pylist(), t["_rowaddr"].to_pylist(),
                               t["quality_producer"].to_pylist(), t["sharpness"].to_pylist()):
        by_frag.setdefault(addr >> 32, set()).add(p)
        assert (p is None) == (v is None)
    assert all(len(s) == 1 for s in by_frag.values()), by_frag
    committed = {rid for rid, p in zip(t["_rowid"].to_pylist(), t["quality_producer"].to_pylist()) if p == producer}
    computed = {int(x) for x in log.read_text().split()}
    assert 4 <= len(committed) < len(good)
    lost = computed - committed
    assert len(lost) <= 2, f"work lost to the crash: {len(lost)} rows, more than one chunk of 2"

    rep = fill(uri, "K", feature, tiny(feature, model_dir), chunk_rows=2)  # the re-run finishes the partition
    assert rep.rows_already_current == len(committed)
    assert rep.rows_computed == len(good) - len(committed)
    t = lance.dataset(uri).to_table(columns=["quality_producer", "sharpness"], filter=equals(S.DROP_ID, "K"))
    assert set(t["quality_producer"].to_pylist()) == {producer} and t["sharpness"].null_count == 0


def _ingest_and_describe(uri: str, drop: str, key: str) -> int:
    n = ingest_drop(Path(drop), key, uri, properties={"mmfs.asset": "videos"}, fragment_rows=3).new_rows
    describe_partition(uri, key, properties={"mmfs.asset": "video_metadata"})
    return n


def _unique_drop(env, key: str, files: list[Path]) -> Path:
    drop = make_drop(env, key, files)
    for f in files:
        with open(drop / f.name, "ab") as fh:
            fh.write(f"drop {key}".encode())  # new content: new rows
    return drop


def test_feature_fills_and_an_ingest_in_parallel_lose_nothing(env, fixture_dir, model_dir):
    good = sorted((fixture_dir / "good").iterdir())
    uri = env.table_uri
    jobs_per_round = [("a", "quality"), ("a", "clip_embedding"), ("b", "depth"), ("b", "quality"), ("b", "caption")]
    with mp.get_context("spawn").Pool(4) as pool:
        for rnd in range(3):
            a, b, c = (f"r{rnd}-a", f"r{rnd}-b", f"r{rnd}-c")
            for key, files in ((a, good[:5]), (b, good[5:])):
                _ingest_and_describe(uri, str(_unique_drop(env, key, files)), key)
            drop_c = _unique_drop(env, c, good[:4])
            jobs = [pool.apply_async(fill_by_name, (uri, f"r{rnd}-{k}", name, str(model_dir), 1)) for k, name in jobs_per_round]
            jobs.append(pool.apply_async(_ingest_and_describe, (uri, str(drop_c), c)))
            results = [j.get(timeout=600) for j in jobs]
            assert results == [5, 5, len(good) - 5, len(good) - 5, len(good) - 5, 4]
    ds = lance.dataset(uri)
    t = ds.to_table(columns=[S.DROP_ID, "quality_producer", "sharpness", "clip_embedding", "depth_png", "caption"])
    assert len(t) == 3 * (len(good) + 4) and len(set(ds.to_table(columns=[S.ID])[S.ID].to_pylist())) == len(t)
    for r in t.to_pylist():
        side = r[S.DROP_ID][-1]
        wanted = {"a": ("sharpness", "clip_embedding"), "b": ("sharpness", "depth_png", "caption"), "c": ()}[side]
        for col in wanted:
            assert r[col] is not None, (r[S.DROP_ID], col)  # every value is present: none lost to a race
        for col in {"sharpness", "clip_embedding", "depth_png", "caption"} - set(wanted):
            assert r[col] is None, (r[S.DROP_ID], col)
