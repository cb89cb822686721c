"""SQL over the table with DuckDB, pinned to a version or tag when asked.

The table is exposed as the view ``videos`` with every column except the video blob (DuckDB cannot read
Lance blob descriptors; ``SELECT *`` would fail otherwise). DuckDB pushes projections and filters
through the view into the Lance scan, so a query reads only the columns it names.
"""

from __future__ import annotations

import duckdb
import lance
import pyarrow as pa

from mmfs_loader.schema import BLOB_COLUMNS
from mmfs_loader.table import open_table


def connect(ds: lance.LanceDataset) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection where ``videos`` is the (pinned) dataset without its blob column."""
    con = duckdb.connect()
    con.register("_mmfs_table", ds)
    cols = ", ".join('"' + c.replace('"', '""') + '"' for c in ds.schema.names if c not in BLOB_COLUMNS)
    con.execute(f"CREATE VIEW videos AS SELECT {cols} FROM _mmfs_table")
    return con


def sql(
    uri: str,
    query: str,
    *,
    version: int | None = None,
    tag: str | None = None,
    storage_options: dict[str, str] | None = None,
) -> pa.Table:
    """Run ``query`` (DuckDB SQL, table ``videos``) and return the result as an Arrow table."""
    ds = open_table(uri, version=version, tag=tag, storage_options=storage_options)
    con = connect(ds)
    try:
        return con.sql(query).to_arrow_table()
    finally:
        con.close()
