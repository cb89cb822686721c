"""Overlapping loaders on one node share one node directory and never remove it under each other (issue 23).

Short-lived jobs on the same pinned selection share ``<root>/<key>/``: a reader that starts while the last
previous reader leaves must end up with a live directory (not a lock on a removed one), later readers that
come and go must leave it alone, and the last one out removes it. ``flock`` locks belong to an open file
description, so threads that open the lock file themselves race exactly as processes do; a gate on the
joiner's shared lock opens the race window every run instead of hoping for it.
"""

from __future__ import annotations

import fcntl
import gc
import logging
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from mmfs_loader import FeatureDataset, Reading
from mmfs_loader.reads.node import NodeDir
from tests.loader_util import make_table

COLS = ["clip_embedding", "height"]
ARR = np.arange(1000, dtype=np.uint64)


class JoinGate:
    """Holds the first shared ``flock`` taken by the thread named ``joiner`` until :attr:`go` is set: the
    joiner has opened the users lock file but does not hold it yet, the window the issue describes."""

    def __init__(self) -> None:
        self.reached, self.go = threading.Event(), threading.Event()
        self._flock = fcntl.flock
        self._held = False

    def flock(self, fd, op):
        if threading.current_thread().name == "joiner" and op & ~fcntl.LOCK_NB == fcntl.LOCK_SH and not self._held:
            self._held = True
            self.reached.set()
            assert self.go.wait(30), "the test never let the joiner go on"
        return self._flock(fd, op)


@pytest.fixture
def gate(monkeypatch) -> JoinGate:
    g = JoinGate()
    monkeypatch.setattr(fcntl, "flock", g.flock)
    return g


def in_thread(name: str, fn):
    """Run ``fn`` in a thread named ``name``; a function that waits for it and returns its result (or raises
    what it raised)."""
    out: dict = {}

    def run() -> None:
        try:
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            out["error"] = e

    t = threading.Thread(target=run, name=name, daemon=True)
    t.start()

    def result():
        t.join(60)
        assert not t.is_alive(), f"{name} hangs"
        if "error" in out:
            raise out["error"]
        return out["value"]

    return result


def test_a_reader_joining_while_the_last_one_leaves_gets_a_live_directory(tmp_path: Path, gate: JoinGate):
    root = tmp_path / "node"
    first = NodeDir(root, "k").attach(owner=True)
    first.save_array("selection.npy", ARR)
    joined = in_thread("joiner", lambda: NodeDir(root, "k").attach(owner=True))
    assert gate.reached.wait(30)  # the joiner opened the lock file and waits to take it shared
    first.release()  # the last previous reader leaves: nobody holds the directory, it goes
    assert not first.path.exists()
    gate.go.set()
    second = joined()  # the joiner starts afresh on a new directory, never on the removed one
    assert second.path.is_dir() and second.load_array("selection.npy") is None
    second.save_array("selection.npy", ARR)
    third = NodeDir(root, "k").attach(owner=True)  # another job comes and goes
    assert np.array_equal(third.load_array("selection.npy"), ARR)
    third.release()
    assert np.array_equal(second.load_array("selection.npy"), ARR)  # the second one's directory is still there
    second.release()
    assert list(root.iterdir()) == []  # the last one out cleans up, lock file included


def test_overlapping_datasets_keep_their_node_cache(tmp_path: Path, gate: JoinGate, caplog):
    """The issue's runs: a dataset made while the previous one on the same selection goes away, another one
    that starts and stops meanwhile; the second reads its cache, with the right values, no fallback."""
    uri = str(tmp_path / "t.lance")
    make_table(uri, 200)
    root = tmp_path / "node"

    def make() -> FeatureDataset:
        return FeatureDataset(uri, version=1, columns=COLS, batch_size=25, reading=Reading(cache_dir=str(root)))

    caplog.set_level(logging.WARNING, logger="mmfs_loader")
    first = make()
    assert first.fill_cache()
    path = first._node.path
    joined = in_thread("joiner", make)
    assert gate.reached.wait(30)
    del first  # the first job exits
    gc.collect()
    assert not path.exists()
    gate.go.set()
    second = joined()
    assert second.uses_cache and second._node.path == path and path.is_dir()
    assert second.fill_cache()
    third = make()  # an evaluation script on the same selection starts and stops
    assert third.fill_cache()
    del third
    gc.collect()
    assert (path / second._reader.cache.name / "meta.json").exists()
    batches = list(second)
    ids = [int(i[1:]) for b in batches for i in b["id"]]
    assert ids == list(range(200))
    emb = torch.cat([b["clip_embedding"] for b in batches])
    assert torch.equal(emb[:, 0], torch.tensor(ids, dtype=torch.float64).div(1000).float())
    assert torch.cat([b["height"] for b in batches]).tolist() == [(360, 720, 1080)[i % 3] for i in ids]
    assert second._reader.reads_from_cache > 0 and second._reader.reads_by_take == 0
    assert not [r.getMessage() for r in caplog.records if r.name.startswith("mmfs_loader") and r.levelno >= logging.WARNING]
    del second, batches, joined  # the thread helper kept the dataset it made
    gc.collect()
    assert list(root.iterdir()) == []


def test_readers_coming_and_going_at_once_never_lose_a_held_directory(tmp_path: Path):
    """No gate: several readers attach, use and leave the directory over and over (a bounded number of
    rounds). Whatever the interleaving, a held directory keeps its files and the last one out removes it."""
    root = tmp_path / "node"

    def churn() -> None:
        for _ in range(400):
            nd = NodeDir(root, "k").attach(owner=True)
            try:
                have = nd.load_array("selection.npy")
                if have is None:
                    have = nd.save_array("selection.npy", ARR)
                assert np.array_equal(have, ARR)
                assert np.array_equal(nd.load_array("selection.npy"), ARR)
            finally:
                nd.release()

    waits = [in_thread(f"reader-{k}", churn) for k in range(4)]
    for w in waits:
        w()
    assert list(root.iterdir()) == []


def test_a_killed_reader_blocks_nobody_and_leftover_lock_files_are_swept(tmp_path: Path):
    root = tmp_path / "node"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from mmfs_loader.reads.node import NodeDir; nd = NodeDir(sys.argv[1], 'k').attach(); "
        "print('held', flush=True); time.sleep(600)"), str(root)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        owner = NodeDir(root, "k").attach(owner=True)
        owner.release()
        assert owner.path.is_dir()  # another process still holds it
    finally:
        holder.kill()
        holder.wait()
    again = NodeDir(root, "k").attach(owner=True)  # the killed holder's lock died with it
    again.release()
    assert list(root.iterdir()) == []
    (root / "gone.users").touch()  # what a remover killed between the directory and its lock file leaves
    fresh = NodeDir(root, "new").attach(owner=True)  # a new directory sweeps its root
    assert sorted(p.name for p in root.iterdir()) == ["new", "new.users"]
    fresh.release()
    assert list(root.iterdir()) == []


def test_a_fill_cut_short_by_the_directory_being_released_does_not_warn(tmp_path: Path, caplog):
    """At exit the last user's finalizer removes the node directory while the background fill may still be
    writing into it: the reader is gone, so that is not worth a warning (it printed "node cache not filled
    (FileNotFoundError ...)" at the end of 3 of 6 short jobs)."""
    import pyarrow as pa

    from mmfs_loader.reads.cache import ColumnCache

    node = NodeDir(tmp_path, "k").attach(owner=True)
    schema = pa.schema([pa.field("height", pa.int32())])

    class ReleasedMidFill:
        def _take(self, offsets):
            node.release()  # the dataset's last user exits while the fill runs
            raise FileNotFoundError(str(node.path / "0.npy"))

    cache = ColumnCache(node, schema, ["height"], 4)
    with caplog.at_level(logging.WARNING, logger="mmfs_loader"):
        cache._fill_if_free(ReleasedMidFill(), np.arange(4))
    assert not node.path.exists()
    assert not [r for r in caplog.records if "node cache not filled" in r.getMessage()]
