"""mmfs_loader: the read side of MMFS and the table contract. It never imports Dagster."""

from mmfs_loader.schema import INGEST_SCHEMA, METADATA, ColumnGroup, groups_in_schema
from mmfs_loader.table import TableNotFoundError, VersionNotFoundError, open_table

__all__ = [
    "INGEST_SCHEMA",
    "METADATA",
    "ColumnGroup",
    "TableNotFoundError",
    "VersionNotFoundError",
    "groups_in_schema",
    "open_table",
]
