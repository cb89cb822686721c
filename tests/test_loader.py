"""FeatureDataset semantics in one process: pinning, selection, order, sharding, resume, guard, recipe."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mmfs_loader import FeatureDataset, Guard, ProvenanceError, Reading, RecipeMismatchError, VersionNotFoundError
from mmfs_loader.reads.ordering import epoch_sequence, mixture_counts, rank_sequence
from tests.loader_util import append, make_table

COLS = ["clip_embedding", "height"]


@pytest.fixture
def uri(tmp_path) -> str:
    u = str(tmp_path / "t.lance")
    t = make_table(u, 300, quarantine_every=50)  # rows 0, 50, ..., 250 are quarantined: 294 selectable
    t.tags.create("snap-1", t.version)
    return u


def ids(ds) -> list[str]:
    return [s["id"] for s in ds]


def test_samples_hold_id_and_only_requested_columns(uri):
    ds = FeatureDataset(uri, tag="snap-1", columns=COLS)
    s = next(iter(ds))
    assert set(s) == {"id", "clip_embedding", "height"}
    assert s["clip_embedding"].dtype == torch.float32 and s["clip_embedding"].shape == (8,)
    i = int(s["id"][1:])
    assert torch.allclose(s["clip_embedding"], torch.full((8,), i / 1000.0))
    assert s["height"] == (360, 720, 1080)[i % 3]


def test_filter_selects_and_quarantine_is_excluded(uri):
    ds = FeatureDataset(uri, tag="snap-1", columns=COLS, filter="height >= 720")
    got = ids(ds)
    want = [f"v{i:06d}" for i in range(300) if i % 3 and i % 50]
    assert got == want  # no shuffle: table order
    assert ds.quarantined == 0  # quarantined rows have null height, so the filter already excludes them
    all_ds = FeatureDataset(uri, tag="snap-1", columns=COLS)
    assert all_ds.quarantined == 6 and all_ds.num_rows == 294
    with_q = FeatureDataset(uri, tag="snap-1", columns=["clip_embedding"], guard=Guard(include_quarantined=True))
    assert with_q.num_rows == 300


def test_filter_values_are_sql_not_python(uri):
    with pytest.raises(ValueError, match="cannot apply filter"):
        FeatureDataset(uri, columns=COLS, filter="height >>= 3")
    with pytest.raises(ValueError, match="no column or column group 'nope'"):
        FeatureDataset(uri, columns=["nope"])
    with pytest.raises(ValueError, match="video blob"):
        FeatureDataset(uri, columns=["video"])


def test_shuffle_is_a_permutation_fixed_by_seed_and_epoch(uri):
    ds = FeatureDataset(uri, tag="snap-1", columns=COLS, shuffle=True, seed=7)
    e0 = ids(ds)
    assert sorted(e0) == ids(FeatureDataset(uri, tag="snap-1", columns=COLS))
    assert ids(FeatureDataset(uri, tag="snap-1", columns=COLS, shuffle=True, seed=7)) == e0
    ds.set_epoch(1)
    e1 = ids(ds)
    assert sorted(e1) == sorted(e0) and e1 != e0
    assert ids(FeatureDataset(uri, tag="snap-1", columns=COLS, shuffle=True, seed=8)) != e0


def test_tag_is_pinned_against_later_writes(uri):
    before = FeatureDataset(uri, tag="snap-1", columns=COLS, shuffle=True)
    first = ids(before)
    append(uri, 300, 100)
    assert ids(before) == first
    assert ids(FeatureDataset(uri, tag="snap-1", columns=COLS, shuffle=True)) == first
    latest = FeatureDataset(uri, columns=COLS)
    assert latest.num_rows == 294 + 100 and latest.version > before.version


@pytest.mark.parametrize("uneven", ["pad", "drop"])
@pytest.mark.parametrize("world", [2, 3, 4])
def test_ranks_get_equal_counts_and_cover_the_selection(uri, uneven, world):
    per = [ids(FeatureDataset(uri, tag="snap-1", columns=COLS, shuffle=True, rank=r, world_size=world, uneven=uneven)) for r in range(world)]
    n = 294
    assert len({len(p) for p in per}) == 1
    flat = [i for p in per for i in p]
    if uneven == "pad":
        assert len(per[0]) == -(-n // world) and set(flat) == set(ids(FeatureDataset(uri, tag="snap-1", columns=COLS)))
        assert len(flat) - len(set(flat)) == len(per[0]) * world - n
    else:
        assert len(per[0]) == n // world and len(set(flat)) == len(flat) == n // world * world


def test_batches_are_collated_blocks(uri):
    ds = FeatureDataset(uri, tag="snap-1", columns=COLS, batch_size=32, shuffle=True)
    batches = list(ds)
    assert len(batches) == len(ds) == 10
    assert batches[0]["clip_embedding"].shape == (32, 8) and batches[0]["height"].dtype == torch.int32
    assert batches[-1]["clip_embedding"].shape == (294 - 9 * 32, 8)
    assert [i for b in batches for i in b["id"]] == ids(FeatureDataset(uri, tag="snap-1", columns=COLS, shuffle=True))


@pytest.mark.parametrize("batch", [None, 16])
def test_resume_mid_epoch_continues_exactly(uri, batch):
    kw = dict(tag="snap-1", columns=COLS, shuffle=True, seed=3, batch_size=batch)
    full = FeatureDataset(uri, **kw)
    full.set_epoch(2)
    want = ids(full) if batch is None else [i for b in full for i in b["id"]]

    ds = FeatureDataset(uri, **kw)
    ds.set_epoch(2)
    it, got = iter(ds), []
    for _ in range(5):
        x = next(it)
        got += [x["id"]] if batch is None else x["id"]
    state = json.loads(json.dumps(ds.state_dict()))  # a state must survive JSON (checkpoints)
    assert state["epoch"] == 2 and state["position"] == len(got)
    fresh = FeatureDataset(uri, **kw)
    fresh.load_state_dict(state)
    rest = ids(fresh) if batch is None else [i for b in fresh for i in b["id"]]
    assert got + rest == want
    assert fresh.state_dict()["position"] == fresh.samples_per_rank  # the epoch is complete
    again = ids(fresh) if batch is None else [i for b in fresh for i in b["id"]]
    assert again == want  # and a new pass starts it from the beginning


def test_foreign_state_is_refused(uri):
    a = FeatureDataset(uri, tag="snap-1", columns=COLS, shuffle=True, seed=1)
    b = FeatureDataset(uri, tag="snap-1", columns=COLS, shuffle=True, seed=2)
    with pytest.raises(ValueError, match="different dataset"):
        b.load_state_dict(a.state_dict())
    c = FeatureDataset(uri, tag="snap-1", columns=COLS, shuffle=True, seed=1, rank=0, world_size=2)
    with pytest.raises(ValueError, match="world_size"):
        c.load_state_dict(a.state_dict())


def test_guard_refuses_mixed_producers_and_missing_values(uri):
    append(uri, 300, 20, producer="clip_embedding:2|model=other")
    append(uri, 320, 5, producer=None)
    with pytest.raises(ProvenanceError) as e:
        FeatureDataset(uri, columns=COLS)
    msg = str(e.value)
    assert "mix 2 producers" in msg and "294" in msg and ": 20" in msg
    assert "5 selected rows have no value" in msg and "allow_mixed_producers=True" in msg
    ok = FeatureDataset(uri, columns=COLS, guard=Guard(allow_mixed_producers=True, drop_incomplete=True))
    assert ok.num_rows == 314 and ok.dropped_incomplete == 5
    narrowed = FeatureDataset(uri, columns=COLS, filter="clip_embedding_producer LIKE 'clip_embedding:1%'")
    assert narrowed.num_rows == 294
    # Columns outside the mixed group are not guarded by it.
    assert FeatureDataset(uri, columns=["height"]).num_rows == 294 + 25


def test_recipe_is_json_and_rebuilds_the_same_dataset(uri):
    ds = FeatureDataset(uri, tag="snap-1", columns=COLS, filter="height >= 720", shuffle=True, seed=5)
    r = json.loads(json.dumps(ds.recipe()))
    assert r["version"] == ds.version and r["tag"] == "snap-1" and r["rows"] == ds.num_rows
    assert list(r["producers"]["clip_embedding"].values()) == [ds.num_rows]
    append(uri, 300, 30)
    again = FeatureDataset.from_recipe(r)
    assert ids(again) == ids(ds) and again.fingerprint == ds.fingerprint
    again.load_state_dict(ds.state_dict())


def test_recipe_fails_clearly_when_the_version_is_gone(uri, tmp_path):
    ds = FeatureDataset(uri, columns=COLS)
    r = ds.recipe()
    r["version"] = 99
    with pytest.raises(VersionNotFoundError, match="version 99"):
        FeatureDataset.from_recipe(r)
    r = ds.recipe()
    r["rows"] += 1
    with pytest.raises(RecipeMismatchError, match="rows"):
        FeatureDataset.from_recipe(r)


def test_mixture_has_exact_weights_and_is_deterministic(uri):
    mix = [("height >= 720", 0.7), ("height < 720", 0.3)]
    ds = FeatureDataset(uri, tag="snap-1", columns=COLS, mixture=mix, samples_per_epoch=200, shuffle=True, seed=1)
    got = list(ds)
    assert len(got) == 200
    high = sum(1 for s in got if s["height"] >= 720)
    assert high == 140
    again = FeatureDataset(uri, tag="snap-1", columns=COLS, mixture=mix, samples_per_epoch=200, shuffle=True, seed=1)
    assert ids(again) == [s["id"] for s in got]
    low_ids = [s["id"] for s in got if s["height"] < 720]
    assert len(set(low_ids)) == 60  # 98 low rows, 60 drawn: no repeats before a component cycles
    r = ds.recipe()
    assert [m["rows"] for m in r["mixture"]] == [196, 98]
    assert ids(FeatureDataset.from_recipe(r)) == ids(again)
    # A mixture is sharded like the rest.
    per = [ids(FeatureDataset(uri, tag="snap-1", columns=COLS, mixture=mix, samples_per_epoch=200, shuffle=True, seed=1, rank=r, world_size=2)) for r in range(2)]
    assert sorted(per[0] + per[1]) == sorted(ids(again))


def test_mixture_upsamples_a_small_component(uri):
    ds = FeatureDataset(uri, tag="snap-1", columns=COLS, mixture={"height = 360": 0.5, "height > 360": 0.5}, samples_per_epoch=400, seed=2, shuffle=True)
    got = ids(ds)
    low = [i for i in got if int(i[1:]) % 3 == 0]
    assert len(low) == 200 and len(set(low)) == 98  # 98 low rows cycled, each at least twice


def test_ordering_functions():
    assert list(mixture_counts([0.7, 0.3], 10)) == [7, 3]
    assert list(mixture_counts([1, 1, 1], 10)) == [4, 3, 3]
    seq = epoch_sequence([10], seed=0, epoch=0, shuffle=True)
    assert sorted(seq) == list(range(10))
    assert list(rank_sequence(np.arange(5), 1, 2, "pad")) == [1, 3, 0]
    assert list(rank_sequence(np.arange(5), 1, 2, "drop")) == [1, 3]
    with pytest.raises(ValueError):
        mixture_counts([0, 0], 3)


@pytest.mark.parametrize("batch", [None, 32])
def test_cached_and_take_reads_agree(uri, batch):
    """The in-memory cache (default when the selection fits) and block takes give the same samples."""
    kw = dict(tag="snap-1", columns=COLS, shuffle=True, seed=9, batch_size=batch, mixture=[("height >= 720", 0.5), ("height < 720", 0.5)])
    cached, taken = FeatureDataset(uri, **kw), FeatureDataset(uri, reading=Reading(cache_bytes=0), **kw)
    assert cached.uses_cache and not taken.uses_cache
    assert not FeatureDataset(uri, reading=Reading(cache_bytes=1000), **kw).uses_cache  # does not fit: takes
    for e in (0, 1):
        cached.set_epoch(e)
        taken.set_epoch(e)
        a, b = list(cached), list(taken)
        assert len(a) == len(b) > 0
        for x, y in zip(a, b):
            assert x["id"] == y["id"] and torch.equal(torch.as_tensor(x["height"]), torch.as_tensor(y["height"]))
            assert torch.equal(x["clip_embedding"], y["clip_embedding"])


def test_depth_is_one_type_in_every_batch(tmp_path):
    """Issue 25.7: ``depth`` was a stacked tensor in a batch of one resolution and a list in a mixed one.
    Now it is a list of float32 ``[K, H, W]`` tensors in every batch, from the dataset and from collate."""
    import lance
    import pyarrow as pa

    from mmfs_loader.contract import depth as D
    from mmfs_loader.contract import schema as S
    from tests.loader_util import rows

    sizes = [(70, 98), (70, 98), (70, 98), (40, 56), (40, 56), (40, 56)]  # batches of 2: one, mixed, one
    t = rows(0, len(sizes))
    enc = [[D.encode_frame(np.random.default_rng(i * 4 + k).random((h, w), np.float32)) for k in range(4)]
           for i, (h, w) in enumerate(sizes)]
    group = S.ColumnGroup("depth", (pa.field(D.PNG, pa.list_(pa.binary())), pa.field(D.MIN, pa.list_(pa.float32())),
                                    pa.field(D.MAX, pa.list_(pa.float32())), pa.field(D.TIMESTAMPS, pa.list_(pa.float64()))))
    values = [[[e[0] for e in r] for r in enc], [[e[1] for e in r] for r in enc], [[e[2] for e in r] for r in enc],
              [[k * 1.0 for k in range(4)]] * len(sizes), ["depth:1|model=tiny"] * len(sizes), [None] * len(sizes)]
    for f, v in zip(group.fields, values, strict=True):
        t = t.append_column(f, pa.array(v, f.type))
    u = str(tmp_path / "d.lance")
    lance.write_dataset(t, u, enable_stable_row_ids=True)

    def check(batches):
        assert len(batches) == 3
        for b, want in zip(batches, [sizes[0:2], sizes[2:4], sizes[4:6]], strict=True):
            assert type(b["depth"]) is list, type(b["depth"])
            assert [tuple(d.shape) for d in b["depth"]] == [(4, *s) for s in want]
            assert all(d.dtype == torch.float32 for d in b["depth"])

    check(list(FeatureDataset(u, columns=["depth"], batch_size=2)))
    check(list(FeatureDataset(u, columns=["depth"]).dataloader(batch_size=2, num_workers=0)))
