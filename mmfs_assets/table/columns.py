"""Declaring a column group once: all-null columns added as a metadata-only commit."""

from __future__ import annotations

import lance

from mmfs_assets.table.retry import backoff, is_conflict
from mmfs_loader.schema import ColumnGroup

MAX_ATTEMPTS = 12


def ensure_group_columns(
    uri: str, group: ColumnGroup, storage_options: dict[str, str] | None = None
) -> lance.LanceDataset:
    """Add the group's missing columns (all null, no data written), retrying lost races.

    Adding columns commits a Lance ``Merge``, which conflicts with fills and appends committed at the same
    moment; the retry re-reads the schema, so a column another writer added meanwhile is not added twice.
    A column that exists with another type is an error: changing a column's type is a migration.
    """
    for attempt in range(MAX_ATTEMPTS):
        ds = lance.dataset(uri, storage_options=storage_options)
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
        try:
            ds.add_columns(missing)
            return lance.dataset(uri, storage_options=storage_options)
        except (OSError, ValueError) as e:
            if "already exists" in str(e).lower() or is_conflict(e):
                if attempt == MAX_ATTEMPTS - 1:
                    raise
                backoff(attempt)
                continue
            raise
    raise AssertionError("unreachable")
