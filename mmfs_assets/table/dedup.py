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

import lance

from mmfs_assets.table.retry import backoff, is_conflict
from mmfs_loader import schema as S
from mmfs_loader.sql import is_in

LOOKUP_BATCH = 512
MAX_ATTEMPTS = 10


def duplicate_rowids(ds: lance.LanceDataset, ids: list[str]) -> list[int]:
    """Stable row ids of every row of ``ids`` except the first committed one per id."""
    rows: dict[str, list[int]] = defaultdict(list)
    for i in range(0, len(ids), LOOKUP_BATCH):
        t = ds.to_table(columns=[S.ID], filter=is_in(S.ID, ids[i : i + LOOKUP_BATCH]), with_row_id=True)
        for id_, rid in zip(t[S.ID].to_pylist(), t["_rowid"].to_pylist()):
            rows[id_].append(rid)
    return sorted(r for rs in rows.values() if len(rs) > 1 for r in sorted(rs)[1:])


def dedup_ids(uri: str, ids: list[str], storage_options: dict[str, str] | None = None) -> int:
    """Delete all but the first committed row of each of ``ids``; returns how many rows were deleted."""
    if not ids:
        return 0
    ids = sorted(set(ids))
    for attempt in range(MAX_ATTEMPTS):
        ds = lance.dataset(uri, storage_options=storage_options)
        losers = duplicate_rowids(ds, ids)
        if not losers:
            return 0
        try:
            ds.delete(f"_rowid IN ({', '.join(str(r) for r in losers)})")
            return len(losers)
        except OSError as e:
            if not is_conflict(e) or attempt == MAX_ATTEMPTS - 1:
                raise
            backoff(attempt)
    raise AssertionError("unreachable")
