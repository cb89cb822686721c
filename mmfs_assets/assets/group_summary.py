"""What a column group holds for one partition after a fill: the numbers every feature asset reports."""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg
import lance

from mmfs_assets.assets.digest import table_digest
from mmfs_loader import schema as S
from mmfs_loader.sql import equals, identifier


@dataclass(frozen=True)
class GroupSummary:
    rows: int
    not_current: int  # rows whose producer is not the run's producer
    nulls_without_error: int  # rows with no value and no reason (should be 0)
    errored: list[tuple[str, str]]  # (file name, error)
    data_version: str

    @property
    def quarantine(self) -> dg.MetadataValue:
        return dg.MetadataValue.md("\n".join(f"- `{f}`: {e}" for f, e in self.errored[:50]) or "none")


def summarize_group(ds: lance.LanceDataset, group: S.ColumnGroup, drop_id: str, producer: str) -> GroupSummary:
    """Reads the partition's id, file name, producer and error columns (never the values themselves)."""
    where = equals(S.DROP_ID, drop_id)
    rows = ds.to_table(columns=[S.ID, S.FILE_NAME, group.producer_column, group.error_column], filter=where)
    value, error = identifier(group.value_columns[0]), identifier(group.error_column)
    nulls = ds.count_rows(filter=f"{where} AND {value} IS NULL AND {error} IS NULL")
    return GroupSummary(
        rows=len(rows),
        not_current=sum(1 for p in rows[group.producer_column].to_pylist() if p != producer),
        nulls_without_error=nulls,
        errored=[(f, e) for f, e in zip(rows[S.FILE_NAME].to_pylist(), rows[group.error_column].to_pylist()) if e],
        data_version=table_digest(rows.select([S.ID, group.producer_column, group.error_column]), S.ID),
    )
