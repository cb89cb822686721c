"""Declaring a column group once: all-null columns added as a metadata-only commit."""

from __future__ import annotations

import lance

from mmfs_assets.table.retry import is_conflict, retry_commit
from mmfs_loader.contract.schema import ColumnGroup
from mmfs_loader.contract.table import TableRef

# Adding columns conflicts with every concurrent fill and append: a few more tries than other commits.
MAX_ATTEMPTS = 12


def _lost_race(e: BaseException) -> bool:
    """A conflict, or another writer added the same column first (the retry re-reads the schema)."""
    return isinstance(e, (OSError, ValueError)) and ("already exists" in str(e).lower() or is_conflict(e))


def ensure_group_columns(table: TableRef | str, group: ColumnGroup) -> lance.LanceDataset:
    """Add the group's missing columns (all null, no data written), retrying lost races.

    Adding columns commits a Lance ``Merge``, which conflicts with fills and appends committed at the same
    moment; the retry re-reads the schema, so a column another writer added meanwhile is not added twice.
    A column that exists with another type is an error: changing a column's type is a migration.
    """
    table = TableRef.of(table)

    def attempt(_: int) -> lance.LanceDataset:
        ds = table.dataset()
        names = set(ds.schema.names)
        for f in group.fields:
            if f.name in names and ds.schema.field(f.name).type != f.type:
                raise TypeError(
                    f"column {f.name!r} exists as {ds.schema.field(f.name).type}, "
                    f"the {group.name!r} group declares {f.type}"
                )
        missing = [f for f in group.fields if f.name not in names]
        if not missing:
            return ds
        ds.add_columns(missing)
        return table.dataset()

    return retry_commit(attempt, attempts=MAX_ATTEMPTS, retry_on=_lost_race)
