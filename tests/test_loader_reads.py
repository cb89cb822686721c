"""How FeatureDataset reads: the node directory and cache, the windowed shuffle, typed options, and its
DataLoader (a real torch DataLoader with a state)."""

from __future__ import annotations

import gc
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import mmfs_loader.reads.cache as cache_mod
from mmfs_loader import FeatureDataLoader, FeatureDataset, Guard, Part, Reading, Shuffle
from tests.loader_util import make_table

COLS = ["clip_embedding", "height", "fps"]


@pytest.fixture(scope="module")
def uri(tmp_path_factory) -> str:
    u = str(tmp_path_factory.mktemp("reads") / "t.lance")
    make_table(u, 301, quarantine_every=40)  # quarantined rows have null metadata: nulls in the cache
    return u


@pytest.fixture
def node_root(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "node"
    monkeypatch.setenv("MMFS_LOADER_CACHE_DIR", str(root))
    return root


def ids_of(batches) -> list[str]:
    return [i for b in batches for i in b["id"]]


def test_the_loader_is_a_torch_dataloader_with_a_state(uri, node_root):
    ds = FeatureDataset(uri, version=1, columns=COLS, shuffle=True, seed=3, batch_size=16)
    loader = ds.dataloader()
    assert isinstance(loader, DataLoader) and isinstance(loader, FeatureDataLoader)
    assert len(loader) == len(ds) == -(-ds.samples_per_rank // 16)
    want = ids_of(loader)
    assert len(want) == ds.samples_per_rank and len(set(want)) == len(want)
    it = iter(loader)
    got = ids_of([next(it) for _ in range(5)])
    state = loader.state_dict()
    assert state["position"] == 80 == loader.samples_handed_out
    fresh = FeatureDataset(uri, version=1, columns=COLS, shuffle=True, seed=3, batch_size=16).dataloader(num_workers=2)
    fresh.load_state_dict(state)
    assert got + ids_of(fresh) == want
    with pytest.raises(ValueError, match="sampler"):
        FeatureDataLoader(ds, shuffle=True)


def test_a_hand_built_dataloader_resumes_with_state_at(uri, node_root):
    def make():
        return FeatureDataset(uri, version=1, columns=COLS, shuffle=True, seed=4, batch_size=10)

    want = ids_of(make())
    ds = make()
    seen = 0
    for k, b in enumerate(DataLoader(ds, batch_size=None)):
        seen += len(b["id"])
        if k == 3:
            break
    state = ds.state_at(seen)  # what the training loop saves: it counted the samples it consumed
    fresh = make()
    fresh.load_state_dict(state)
    assert ids_of(DataLoader(fresh, batch_size=None)) == want[seen:]


FLAT_0_1_0 = [
    ("include_quarantined", True, "guard=Guard"),
    ("allow_mixed_producers", True, "guard=Guard"),
    ("drop_incomplete", True, "guard=Guard"),
    ("producers", {"clip_embedding": "clip_embedding:1"}, "guard=Guard"),
    ("fetch_size", 64, "reading=Reading"),
    ("decode_threads", 2, "reading=Reading"),
    ("cache_bytes", 0, "reading=Reading"),
]


@pytest.mark.parametrize(("name", "value", "group"), FLAT_0_1_0)
def test_a_flat_keyword_of_0_1_0_fails_naming_its_group(uri, name, value, group):
    with pytest.raises(TypeError, match=re.escape(f"FeatureDataset({name}=...) is no longer accepted: give {group}({name}=...)")):
        FeatureDataset(uri, version=1, columns=COLS, **{name: value})
    with pytest.raises(TypeError, match=re.escape(f"give {group}({name}=...)")):  # even beside the group itself
        FeatureDataset(uri, version=1, columns=COLS, guard=Guard(), reading=Reading(), **{name: value})


def test_unknown_keywords_and_removed_names_fail(uri):
    import mmfs_loader

    with pytest.raises(TypeError, match="unexpected keyword argument 'no_such_option'"):
        FeatureDataset(uri, version=1, columns=COLS, no_such_option=1)
    with pytest.raises(AttributeError, match="ResumableLoader"):
        mmfs_loader.ResumableLoader  # noqa: B018  (the 0.1.0 name of FeatureDataLoader)
    with pytest.raises(TypeError, match="FeatureDataLoader reads a FeatureDataset, not list"):
        FeatureDataLoader([{"id": "a"}])  # type: ignore[arg-type]


def test_typed_options_and_a_mixture_as_pairs(uri, node_root):
    pairs = FeatureDataset(uri, version=1, columns=COLS, mixture=[("height >= 720", 0.6), ("height < 720", 0.4)],
                           guard=Guard(drop_incomplete=True, include_quarantined=True), reading=Reading(fetch_size=64, cache_bytes=0))
    typed = FeatureDataset(uri, version=1, columns=COLS, mixture=[Part("height >= 720", 0.6), Part("height < 720", 0.4)],
                           guard=Guard(drop_incomplete=True, include_quarantined=True), reading=Reading(fetch_size=64, cache_bytes=0))
    assert pairs.fingerprint == typed.fingerprint and ids_of(pairs) == ids_of(typed)
    for bad in (dict(window=0), dict(buffer=-1), dict(lanes=True)):
        with pytest.raises(ValueError, match="Shuffle"):
            Shuffle(**bad)
    with pytest.raises(ValueError, match="fetch_size"):
        Reading(fetch_size=0)
    with pytest.raises(ValueError, match="mixture"):
        FeatureDataset(uri, version=1, columns=COLS, shuffle=Shuffle(window=8), mixture=[Part("height > 0")])


def test_the_node_cache_fills_in_the_background_and_reads_what_take_reads(node_root, tmp_path):
    import lance
    import pyarrow as pa

    from tests.loader_util import rows

    t = rows(0, 230)
    n = t.num_rows
    t = t.set_column(t.schema.get_field_index("size_bytes"), "size_bytes",  # nulls in a number column
                     pa.array([None if i % 7 == 0 else i for i in range(n)], pa.int64()))
    t = t.set_column(t.schema.get_field_index("file_name"), "file_name",  # and in a string column
                     pa.array([None if i % 5 == 0 else f"f{i}.mp4" for i in range(n)], pa.string()))
    uri = str(tmp_path / "nulls.lance")
    lance.write_dataset(t, uri, max_rows_per_file=64, enable_stable_row_ids=True)
    kw = dict(version=1, columns=[*COLS, "size_bytes", "file_name", "drop_id"], shuffle=True, seed=5, batch_size=32)
    cached = FeatureDataset(uri, **kw)
    taken = FeatureDataset(uri, reading=Reading(cache_bytes=0), **kw)
    assert cached.uses_cache and not taken.uses_cache
    first = list(cached)  # the first block is read by take, the fill starts behind it
    assert cached._reader.reads_by_take >= 1
    assert cached.fill_cache()
    cached.set_epoch(0)
    takes = cached._reader.reads_by_take
    again = list(cached)
    assert cached._reader.reads_from_cache >= 2 and cached._reader.reads_by_take == takes  # all from the cache
    for a, b, c in zip(first, again, list(taken)):
        assert a["id"] == b["id"] == c["id"] and b["drop_id"] == c["drop_id"] and b["file_name"] == c["file_name"]
        for col in ("clip_embedding", "height", "fps"):
            assert torch.equal(b[col], c[col]) and b[col].dtype == c[col].dtype, col
        assert b["size_bytes"] == c["size_bytes"]  # a list with None, as the Arrow conversion gives
    assert any(None in b["size_bytes"] for b in again) and any(None in b["file_name"] for b in again)


def test_the_selection_is_not_pickled_and_the_node_directory_is_shared_then_removed(uri, node_root, tmp_path):
    small = FeatureDataset(uri, version=1, columns=COLS, shuffle=True, filter="height = 360")
    big = FeatureDataset(uri, version=1, columns=COLS, shuffle=True)
    assert abs(len(pickle.dumps(big)) - len(pickle.dumps(small))) < 512  # no per-row payload
    twin = FeatureDataset(uri, version=1, columns=COLS, shuffle=True)
    assert twin._node.path == big._node.path and (big._node.path / "selection.npy").exists()
    copy = pickle.loads(pickle.dumps(big))  # what a worker does: map the node's files
    assert np.array_equal(copy.rank_order(2), big.rank_order(2))
    path = big._node.path
    del big, copy
    gc.collect()
    assert path.exists()  # the twin still holds it
    del twin
    gc.collect()
    assert not path.exists()


def test_a_dead_filler_leaves_no_cache_and_the_next_reader_fills_it(uri, node_root, monkeypatch):
    ds = FeatureDataset(uri, version=1, columns=COLS, shuffle=True, seed=6, batch_size=32)
    cache = ds._reader.cache
    lock = str(ds._node.file(cache.name + ".lock"))
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
        "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(600)"), lock], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"  # another process is "filling"
        monkeypatch.setattr(cache_mod, "RETRY_S", 0.0)
        n = sum(len(b["id"]) for b in ds)  # served by take, never blocked by the other filler
        assert n == ds.samples_per_rank and not cache.ready()
    finally:
        holder.kill()
        holder.wait()
    os.makedirs(ds._node.file(".cache-leftover.tmp"), exist_ok=True)  # what a killed filler leaves
    ds.prepare()
    cache._filler.join(60)
    assert cache.ready()


@pytest.mark.parametrize("uneven", ["pad", "drop"])
def test_windowed_shuffle_covers_each_row_once_per_epoch_and_keeps_reads_local(uri, node_root, uneven):
    shuffle = Shuffle(window=16, buffer=48, lanes=4)
    per = []
    for rank in range(3):
        ds = FeatureDataset(uri, version=1, columns=COLS, shuffle=shuffle, seed=7, batch_size=8, rank=rank,
                            world_size=3, uneven=uneven, reading=Reading(cache_bytes=0))
        got = ids_of(ds)
        assert len(got) == ds.samples_per_rank
        per.append(got)
        order = ds._order(0, 8)
        for j in range(len(order) // 8):  # a batch comes from one buffer: a few windows of neighbours
            rows = np.sort(order.positions(j * 8, j * 8 + 8))
            assert len(set((rows // 16).tolist())) <= 48 // 16 + 1
    everything = [i for p in per for i in p]
    n = FeatureDataset(uri, version=1, columns=COLS).num_rows
    if uneven == "drop":
        assert len(set(everything)) == len(everything) == n - n % 3
    else:
        assert set(everything) == {s["id"] for s in FeatureDataset(uri, version=1, columns=COLS)}
    ds = FeatureDataset(uri, version=1, columns=COLS, shuffle=shuffle, seed=7, batch_size=8, reading=Reading(cache_bytes=0))
    e0 = ids_of(ds)
    ds.set_epoch(1)
    assert sorted(e0) == sorted(ids_of(ds)) and e0 != ids_of(ds)
    assert e0 != sorted(e0)


def test_windowed_shuffle_resumes_across_worker_counts(uri, node_root):
    def make():
        return FeatureDataset(uri, version=1, columns=COLS, shuffle=Shuffle(window=16, buffer=32, lanes=4), seed=8,
                              batch_size=8, reading=Reading(cache_bytes=0))

    want = ids_of(make().dataloader())
    assert ids_of(make().dataloader(num_workers=2)) == want
    loader = make().dataloader(num_workers=2)
    got = []
    for k, b in enumerate(loader):
        got += b["id"]
        if k == 9:
            break
    state = loader.state_dict()
    del loader
    fresh = make().dataloader(num_workers=0)
    fresh.load_state_dict(state)
    assert got + ids_of(fresh) == want

    def rows():  # the loader batches: its batch size is the block size the order depends on
        return FeatureDataset(uri, version=1, columns=COLS, shuffle=Shuffle(window=16, buffer=32, lanes=4), seed=8,
                              reading=Reading(cache_bytes=0))

    eights = rows().dataloader(batch_size=8)
    next(iter(eights))
    with pytest.raises(ValueError, match="block size"):
        rows().dataloader(batch_size=4).load_state_dict(eights.state_dict())


def test_epoch_orders_are_computed_once_per_node_and_old_ones_removed(uri, node_root):
    ds = FeatureDataset(uri, version=1, columns=COLS, shuffle=True, seed=9, batch_size=16)
    for e in range(4):
        ds.set_epoch(e)
        first = ds.rank_order()
        kept = sorted(int(f.name.rsplit("-e", 1)[1][:-4]) for f in ds._node.path.glob("order-*.npy"))
        assert kept == [k for k in (e - 1, e) if k >= 0]
    worker = pickle.loads(pickle.dumps(ds))  # a worker maps the node's order instead of computing it
    assert np.array_equal(worker.rank_order(3), first)


def test_directories_left_by_killed_jobs_are_swept_unless_held(node_root):
    from mmfs_loader.reads.node import NodeDir

    held = NodeDir(node_root, "held").attach()  # a live job's directory
    left = node_root / "left"  # a killed job's: nobody holds it
    left.mkdir(parents=True)
    (left / "selection.npy").write_bytes(b"x" * 100)
    for d in (left, held.path):
        os.utime(d, (1, 1))  # untouched for a long time
    NodeDir(node_root, "new").attach(owner=True)  # a new directory sweeps its root
    assert not left.exists() and held.path.exists()


def test_node_files_are_mapped_from_many_threads_at_once(tmp_path):
    """The read-ahead threads map node files concurrently; numpy's header reader compiles with ``ast``, which
    CPython 3.11 cannot do from two threads at once (it failed CI once): the loader parses headers itself."""
    from concurrent.futures import ThreadPoolExecutor

    from mmfs_loader.reads.node import map_npy

    arrays = [np.arange(n, dtype=np.uint64) for n in (0, 1, 300)] + [np.zeros((7, 8), np.float32), np.array([b"v1", b"v22"])]
    paths = []
    for k, a in enumerate(arrays):
        np.save(tmp_path / f"{k}.npy", a)
        paths.append(tmp_path / f"{k}.npy")
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda i: map_npy(paths[i % len(paths)]), range(2000)))
    for i, g in enumerate(got):
        want = arrays[i % len(arrays)]
        assert g.dtype == want.dtype and np.array_equal(g, want)
