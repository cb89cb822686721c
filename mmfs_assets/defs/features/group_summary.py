"""What a column group holds for one partition after a fill: the numbers every feature asset reports."""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg
import lance
import numpy as np

from mmfs_assets.defs.lineage import table_digest
from mmfs_assets.engine.sampling import current_producers
from mmfs_loader.contract import schema as S
from mmfs_loader.contract.sql import equals, identifier
from mmfs_loader.contract.status import repeated_times

M = S.METADATA


@dataclass(frozen=True)
class GroupSummary:
    rows: int
    not_current: int  # rows whose producer is not the run's producer
    nulls_without_error: int  # rows with no value and no reason (should be 0)
    errored: list[tuple[str, str]]  # (file name, error) of the group's own errors
    data_version: str
    quarantined_by_metadata: int = 0  # rows video_metadata quarantined (their error row here is not this group's)
    rows_with_repeated_frames: int = 0  # filled rows that took a frame more than once

    @property
    def quarantine(self) -> dg.MetadataValue:
        return dg.MetadataValue.md("\n".join(f"- `{f}`: {e}" for f, e in self.errored[:50]) or "none")


def summarize_group(ds: lance.LanceDataset, group: S.ColumnGroup, drop_id: str, producer: str) -> GroupSummary:
    """Reads the partition's id, file name, producer and error columns, the metadata's error column and the
    group's frame times (never the values themselves).

    Under ``sampling=auto`` both concrete modes count as current (:mod:`mmfs_assets.engine.sampling`). A
    row whose metadata has an error is the metadata step's quarantine, counted apart from the group's own
    errors (a damaged file must not make every feature look failed)."""
    where = equals(S.DROP_ID, drop_id)
    names = set(ds.schema.names)
    upstream = M.error_column if group.name != M.name and M.error_column in names else None
    stamps = f"{group.name}_timestamps" if f"{group.name}_timestamps" in names else None
    cols = [S.ID, S.FILE_NAME, group.producer_column, group.error_column, *(c for c in (upstream, stamps) if c)]
    rows = ds.to_table(columns=cols, filter=where)
    value, error = identifier(group.value_columns[0]), identifier(group.error_column)
    nulls = ds.count_rows(filter=f"{where} AND {value} IS NULL AND {error} IS NULL")
    current = current_producers(producer, "keyframe")
    quarantined = rows[upstream].is_valid().to_numpy(zero_copy_only=False) if upstream else np.zeros(len(rows), bool)
    errors = rows[group.error_column].to_pylist()
    filled = rows[group.producer_column].is_valid().to_numpy(zero_copy_only=False)
    repeated = repeated_times(rows[stamps]) & filled if stamps else np.zeros(len(rows), bool)
    return GroupSummary(
        rows=len(rows),
        not_current=sum(1 for p in rows[group.producer_column].to_pylist() if p not in current),
        nulls_without_error=nulls,
        errored=[(f, e) for f, e, q in zip(rows[S.FILE_NAME].to_pylist(), errors, quarantined) if e and not q],
        data_version=table_digest(rows.select([S.ID, group.producer_column, group.error_column]), S.ID),
        quarantined_by_metadata=int(quarantined.sum()),
        rows_with_repeated_frames=int(repeated.sum()),
    )
