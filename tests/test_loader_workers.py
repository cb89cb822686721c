"""FeatureDataset with spawned DataLoader workers: coverage over ranks x workers, resume across worker counts."""

from __future__ import annotations

import pytest

from mmfs_loader import FeatureDataset, Reading
from tests.loader_util import make_table

COLS = ["clip_embedding", "height"]


@pytest.fixture(scope="module")
def uri(tmp_path_factory) -> str:
    u = str(tmp_path_factory.mktemp("workers") / "t.lance")
    make_table(u, 301)  # odd on purpose: 2 ranks need padding
    return u


def dataset(uri, **kw) -> FeatureDataset:
    return FeatureDataset(uri, version=1, columns=COLS, shuffle=True, seed=11, **kw)


def loader_ids(loader) -> list[str]:
    return [i for b in loader for i in b["id"]]


def test_two_ranks_two_workers_cover_the_selection_once(uri):
    per_rank = []
    for rank in range(2):
        ds = dataset(uri, rank=rank, world_size=2, uneven="drop")
        ds.set_epoch(3)
        got = loader_ids(ds.dataloader(batch_size=8, num_workers=2))
        assert got == _names(ds.rank_order(3), uri)  # the loader yields the rank order, batch after batch
        per_rank.append(got)
    assert len(per_rank[0]) == len(per_rank[1]) == 150
    union = per_rank[0] + per_rank[1]
    assert len(set(union)) == 300  # exactly once; one row of 301 is dropped this epoch
    everything = loader_ids(dataset(uri).dataloader(batch_size=64))
    assert set(union) < set(everything) and len(everything) == 301


def _names(row_ids, uri) -> list[str]:
    import lance

    t = lance.dataset(uri, version=1)._take_rows(row_ids.tolist(), columns=["id"])
    return t["id"].to_pylist()


def test_worker_count_does_not_change_the_order(uri):
    base = loader_ids(dataset(uri, rank=1, world_size=2).dataloader(batch_size=16))
    assert len(base) == 151  # padded
    assert loader_ids(dataset(uri, rank=1, world_size=2).dataloader(batch_size=16, num_workers=1)) == base
    assert loader_ids(dataset(uri, rank=1, world_size=2).dataloader(batch_size=16, num_workers=2)) == base


@pytest.mark.parametrize(("before", "after"), [(2, 1), (0, 2)])
def test_resume_with_another_worker_count(uri, before, after):
    want = loader_ids(dataset(uri, batch_size=10).dataloader())
    ds = dataset(uri, batch_size=10, reading=Reading(cache_bytes=0))  # block takes here; the cache elsewhere
    loader = ds.dataloader(num_workers=before)
    got = []
    for k, b in enumerate(loader):
        got += b["id"]
        if k == 6:
            break
    state = loader.state_dict()
    assert state["position"] == 70
    del loader
    fresh = dataset(uri, batch_size=10)
    fresh.load_state_dict(state)
    rest = loader_ids(fresh.dataloader(num_workers=after))
    assert got + rest == want


def test_persistent_workers_follow_set_epoch(uri):
    ds = dataset(uri, batch_size=32)
    loader = ds.dataloader(num_workers=2, persistent_workers=True)
    epochs = []
    for e in range(2):
        loader.set_epoch(e)
        epochs.append(loader_ids(loader))
    assert sorted(epochs[0]) == sorted(epochs[1]) and epochs[0] != epochs[1]
    ref = dataset(uri, batch_size=32)
    ref.set_epoch(1)
    assert loader_ids(ref.dataloader()) == epochs[1]
