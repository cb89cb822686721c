"""Shards: one fill cut into groups of whole Lance fragments that can run independently, in any order.

A shard is self-contained: :func:`mmfs_assets.engine.fill.fill_feature` with ``fragments=shard.fragments``
decodes, computes and commits (column-only, chunked) only the partition's rows in those fragments, skipping
rows already current. Shards of one fill never share a fragment, so each row is written by exactly one
shard, and a shard's column-only commits rebase over its siblings' (different fragments) without conflict.

Sizing: ``fragments_per_shard`` (a setting for tuning) or, by default, small enough that every replica gets
about ``SHARDS_PER_REPLICA`` shards where there are fragments for them (a fill of 2 fragments on 2 replicas
runs 2 shards), and at most ``MAX_AUTO_FRAGMENTS`` fragments each (a crash or a lost replica redoes at most
that much). Several shards per replica even out the end of a fill (``bench/scale.py``: on 2 replicas, 4
shards of 12 fragments took 12% longer than 13 of 4, while 52 shards of 1 cost no more than 13).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from mmfs_loader.contract import schema as S
from mmfs_loader.contract.sql import equals
from mmfs_loader.contract.table import TableRef

MAX_AUTO_FRAGMENTS = 16
SHARDS_PER_REPLICA = 4


@dataclass(frozen=True)
class Shard:
    drop_id: str
    fragments: tuple[int, ...]
    rows: int  # the partition's rows in these fragments when planned

    def label(self) -> str:
        return f"{self.drop_id}[{self.fragments[0]}..{self.fragments[-1]}]"


def partition_fragments(table: TableRef, drop_id: str) -> dict[int, int]:
    """Fragment id -> how many of the partition's rows it holds (a projected scan of row addresses)."""
    t = table.dataset().to_table(columns=[], filter=equals(S.DROP_ID, drop_id), with_row_address=True)
    frags = (t["_rowaddr"].to_numpy() >> 32).astype(np.int64)
    ids, counts = np.unique(frags, return_counts=True)
    return {int(f): int(n) for f, n in zip(ids, counts)}


def shard_size(total_fragments: int, replicas: int, fragments_per_shard: int | None = None) -> int:
    """Fragments per shard: the setting, else about ``SHARDS_PER_REPLICA`` shards per replica, at most
    ``MAX_AUTO_FRAGMENTS``."""
    if fragments_per_shard is not None:
        if fragments_per_shard < 1:
            raise ValueError(f"fragments per shard must be at least 1, not {fragments_per_shard}")
        return fragments_per_shard
    return max(1, min(MAX_AUTO_FRAGMENTS, math.ceil(total_fragments / (SHARDS_PER_REPLICA * max(1, replicas)))))


def plan_shards(table: TableRef | str, drop_ids: Iterable[str], *, replicas: int = 1,
                fragments_per_shard: int | None = None) -> list[Shard]:
    """The shards of a fill of ``drop_ids`` (one partition, or a backfill of many): whole fragments, never
    two partitions in one shard (each partition keeps its own report and materialization)."""
    table = TableRef.of(table)
    per_drop = {d: partition_fragments(table, d) for d in dict.fromkeys(drop_ids)}
    size = shard_size(sum(len(f) for f in per_drop.values()), replicas, fragments_per_shard)
    out = []
    for drop, frags in per_drop.items():
        ids = sorted(frags)
        for i in range(0, len(ids), size):
            part = tuple(ids[i : i + size])
            out.append(Shard(drop, part, sum(frags[f] for f in part)))
    return out


def group_files(table: TableRef | str, producer_column: str, fragments: Iterable[int]) -> dict[int, str | None]:
    """Fragment id -> the data file that holds the group's columns there (each column-only commit writes a
    new one). Planned before a forced fill, it tells a retried shard which of its fragments the killed
    attempt already committed (their file changed), so those are not written twice."""
    ds = TableRef.of(table).dataset()
    field = ds.lance_schema.field(producer_column)
    if field is None:
        raise KeyError(f"the table has no column {producer_column!r}")
    fid = field.id()
    out: dict[int, str | None] = {}
    for f in fragments:
        frag = ds.get_fragment(int(f))
        files = [] if frag is None else [d.path for d in frag.data_files() if fid in d.fields]
        out[int(f)] = files[0] if files else None
    return out
