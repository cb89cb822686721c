"""One row per content id, as a property of the table write: a deterministic post-commit dedup.

Appends are not transactions over the id column: two ingests that read the table before either commits
(two Dagster instances, or runs outside any pool) can both append the same video. After each append the
writer looks up the ids it wrote and deletes every row of an id but the first committed one (the
smallest stable row id: stable row ids are handed out in commit order). Every writer makes the same
choice, so racing dedups agree, and deleting an already-deleted row is a no-op. Deletes compose with
concurrent feature fills (DataReplacement) and appends; a delete that loses a race is retried.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

import lance
import pyarrow as pa
import pyarrow.compute as pc

from mmfs_assets.table.retry import retry_commit
from mmfs_loader.contract import schema as S
from mmfs_loader.contract.sql import is_in
from mmfs_loader.contract.table import TableRef

LOOKUP_BATCH = 512  # above this many ids, one scan of the table's ids instead of an IN filter


@dataclass(frozen=True)
class Removed:
    """A row the dedup deleted: which drop appended it, and when."""

    id: str
    drop_id: str
    ingested_at: datetime | None


def duplicates(ds: lance.LanceDataset, ids: list[str]) -> dict[int, Removed]:
    """Every row of ``ids`` except the first committed one per id, by stable row id."""
    cols = [S.ID, S.DROP_ID, S.INGESTED_AT]
    if len(ids) > LOOKUP_BATCH:  # many ids (a large re-ingested drop): one projected scan beats many IN scans
        t = ds.to_table(columns=cols, with_row_id=True)
        tables = [t.filter(pc.is_in(t[S.ID], value_set=pa.array(ids, pa.string())))]
    else:
        tables = [ds.to_table(columns=cols, filter=is_in(S.ID, ids), with_row_id=True)]
    rows: dict[str, list[tuple[int, Removed]]] = defaultdict(list)
    for t in tables:
        for r in t.to_pylist():
            rows[r[S.ID]].append((r["_rowid"], Removed(r[S.ID], r[S.DROP_ID], r[S.INGESTED_AT])))
    return {rid: rem for rs in rows.values() if len(rs) > 1 for rid, rem in sorted(rs, key=lambda x: x[0])[1:]}


def dedup_ids(table: TableRef | str, ids: list[str]) -> list[Removed]:
    """Delete all but the first committed row of each of ``ids``; returns the rows deleted."""
    if not ids:
        return []
    table, ids = TableRef.of(table), sorted(set(ids))

    def attempt(_: int) -> list[Removed]:
        ds = table.dataset()
        losers = duplicates(ds, ids)
        if losers:
            ds.delete(f"_rowid IN ({', '.join(str(r) for r in sorted(losers))})")
        return list(losers.values())

    return retry_commit(attempt)
