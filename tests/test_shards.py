"""Shards of whole fragments (issue 24's unit of work): sized so every replica gets work, each row written by
exactly one shard, the same values as one unsharded fill, in any order."""

from __future__ import annotations

import shutil

import lance
import pytest

from mmfs_assets import samples
from mmfs_assets.engine.plan import FragmentGoneError
from mmfs_assets.engine.shards import plan_shards, shard_size
from mmfs_assets.features import discover
from tests.features_util import build_table, fill, tiny

FEATURES = {f.name: f for f in discover()}


@pytest.fixture
def table(tmp_path) -> str:
    for key, n in (("A", 8), ("B", 2)):
        drop = tmp_path / key
        drop.mkdir()
        for i in range(n):
            samples.write_video(drop / f"{key}{i}.mp4", samples.Spec(f"{key}{i}", 64, 48, 10, 1.0 + 0.1 * i + (key == "B")))
    uri = str(tmp_path / "t.lance")
    build_table(uri, {"A": tmp_path / "A", "B": tmp_path / "B"}, fragment_rows=2)  # A: 4 fragments, B: 1
    return uri


def test_shard_sizes():
    assert shard_size(2, replicas=2) == 1  # 2 fragments on 2 replicas: 2 shards
    assert shard_size(40, replicas=2) == 5  # about four shards per replica
    assert shard_size(5, replicas=2) == 1
    assert shard_size(10_000, replicas=8) == 16  # never more than MAX_AUTO_FRAGMENTS
    assert shard_size(10, replicas=2, fragments_per_shard=3) == 3
    with pytest.raises(ValueError, match="at least 1"):
        shard_size(10, 2, 0)


def test_shards_cover_every_row_once_and_fill_like_one_fill(table, model_dir, tmp_path):
    feature = FEATURES["quality"]
    model = tiny(feature, model_dir)
    assert [len(s.fragments) for s in plan_shards(table, ["A", "B"], replicas=1)] == [2, 2, 1]  # about four per replica
    assert [len(s.fragments) for s in plan_shards(table, ["A", "B"], replicas=2)] == [1, 1, 1, 1, 1]
    shards = plan_shards(table, ["A", "B"], replicas=4)
    assert [len(s.fragments) for s in shards] == [1, 1, 1, 1, 1] and {s.drop_id for s in shards} == {"A", "B"}
    assert sum(s.rows for s in shards) == 10
    assert len({f for s in shards for f in s.fragments}) == 5  # no fragment in two shards
    whole = str(tmp_path / "whole.lance")
    shutil.copytree(table, whole)
    for key in ("A", "B"):
        fill(whole, key, feature, model)
    reports = [fill(table, s.drop_id, feature, model, fragments=s.fragments) for s in reversed(shards)]  # any order
    assert [r.rows_in_partition for r in reports] == [s.rows for s in reversed(shards)]
    assert sum(r.rows_written for r in reports) == 10  # each row exactly once
    cols = ["id", "sharpness", "motion", "quality_producer", "quality_error"]
    got = sorted(lance.dataset(table).to_table(columns=cols).to_pylist(), key=lambda r: r["id"])
    want = sorted(lance.dataset(whole).to_table(columns=cols).to_pylist(), key=lambda r: r["id"])
    assert got == want and all(r["quality_producer"] == model.producer for r in got)
    again = fill(table, shards[0].drop_id, feature, model, fragments=shards[0].fragments)
    assert (again.rows_already_current, again.rows_written) == (shards[0].rows, 0)  # a re-run resumes


def test_a_shard_whose_fragment_was_compacted_away_says_so(table, model_dir):
    feature = FEATURES["quality"]
    shards = plan_shards(table, ["A"], fragments_per_shard=3)
    assert [len(s.fragments) for s in shards] == [3, 1]
    lance.dataset(table).optimize.compact_files(target_rows_per_fragment=1000)
    with pytest.raises(FragmentGoneError, match="plan the shards again"):
        fill(table, "A", feature, tiny(feature, model_dir), fragments=shards[0].fragments)
