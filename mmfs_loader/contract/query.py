"""SQL over the table with DuckDB, pinned to a version or tag when asked.

The table is exposed as the view ``videos`` with every column except the video blob (DuckDB cannot read
Lance blob descriptors; ``SELECT *`` would fail otherwise). DuckDB pushes projections and filters
through the view into the Lance scan, so a query reads only the columns it names.

The connection is locked down by default: no file system access (``COPY ... TO``, ``read_text``,
``ATTACH``, ``EXPORT`` fail), no extension installs or loads, and the configuration cannot be changed
from SQL. SQL over the table can then neither read secrets nor overwrite the table's own files.
``allow_external_access=True`` (``mmfs sql --unsafe-allow-files``) is the explicit opt-in.
"""

from __future__ import annotations

import re

import duckdb
import lance
import pyarrow as pa
import pyarrow.dataset as pds

from mmfs_loader.contract.schema import BLOB_COLUMNS
from mmfs_loader.contract.table import open_table

LOCKED_DOWN = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
    "allow_unsigned_extensions": False,
}


class _FilterSafeDataset(lance.LanceDataset):
    """The dataset as DuckDB scans it, with a fallback for filters pylance 14 cannot push down.

    DuckDB hands its filters to ``scanner(columns=, filter=<pyarrow expression>)``; pylance 14.0.2 fails to
    convert an expression that names a fixed-size-list column (``WHERE clip_embedding IS NOT NULL``: "No
    match for FieldRef.Name(clip_embedding)"). Such a scan reads the projected columns plus the ones the
    filter names and applies the filter in Arrow, batch by batch (streamed, never the whole table).
    """

    def scanner(self, *args, **kw):
        try:
            return super().scanner(*args, **kw)
        except (pa.ArrowInvalid, ValueError) as e:
            expr = kw.get("filter")
            if args or expr is None or "No match for FieldRef" not in str(e):
                raise
        wanted = kw.get("columns") or [c for c in self.schema.names if c not in BLOB_COLUMNS]
        text = str(expr)
        named = [c for c in self.schema.names if c not in BLOB_COLUMNS and re.search(rf"\b{re.escape(c)}\b", text)]
        reader = super().scanner(columns=list(dict.fromkeys([*wanted, *named]))).to_reader()
        schema = pa.schema([self.schema.field(c) for c in wanted])

        def batches():
            for b in reader:
                t = pa.Table.from_batches([b]).filter(expr).select(wanted)
                yield from t.cast(schema).to_batches()

        return pds.Scanner.from_batches(batches(), schema=schema)


def connect(ds: lance.LanceDataset, *, allow_external_access: bool = False) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection where ``videos`` is the (pinned) dataset without its blob column."""
    ds.__class__ = _FilterSafeDataset  # same object and state; only its scanner() gains the fallback
    con = duckdb.connect(config={} if allow_external_access else {**LOCKED_DOWN, "lock_configuration": True})
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
    allow_external_access: bool = False,
) -> pa.Table:
    """Run ``query`` (DuckDB SQL, table ``videos``) and return the result as an Arrow table."""
    ds = open_table(uri, version=version, tag=tag, storage_options=storage_options)
    con = connect(ds, allow_external_access=allow_external_access)
    try:
        return con.sql(query).to_arrow_table()
    except duckdb.Error as e:
        verb = _write(con, query)
        if verb is not None:  # DuckDB says "Can only delete from base table": the view cannot be written
            raise ReadOnlyError(f"SQL over the table is read-only: {verb} cannot change `videos`") from e
        raise
    finally:
        con.close()


class ReadOnlyError(ValueError):
    """SQL that tries to change the table (``INSERT``, ``UPDATE``, ``DELETE``, ``MERGE``): ``videos`` is a
    read-only view; the pipeline writes the table."""


_WRITES = {"INSERT": "INSERT", "UPDATE": "UPDATE", "DELETE": "DELETE", "MERGE_INTO": "MERGE"}


def _write(con: duckdb.DuckDBPyConnection, query: str) -> str | None:
    """The first statement of ``query`` that writes a table (``"DELETE"``), or None."""
    try:
        statements = con.extract_statements(query)
    except duckdb.Error:  # not even parsed: not a write
        return None
    return next((_WRITES[s.type.name] for s in statements if s.type.name in _WRITES), None)
