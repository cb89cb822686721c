"""Creating the table on first use and appending ingest rows."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import lance
import pyarrow as pa

from mmfs_assets.table.retry import retry_commit
from mmfs_loader.schema import INGEST_SCHEMA
from mmfs_loader.table import TableRef

# Rows per fragment written by ingest; the feature fill's default chunk is the same, so one fill
# commit covers whole fragments and writes each fragment's new column file exactly once.
FRAGMENT_ROWS = 256


def _exists(table: TableRef) -> lance.LanceDataset | None:
    try:
        return table.dataset()
    except (ValueError, OSError) as e:
        if "not found" in str(e).lower() or "does not exist" in str(e).lower():
            return None
        raise


class TableLocationError(ValueError):
    """The table URI points at something that is not a Lance table and must not become one."""


def check_location(uri: str) -> None:
    """Refuse to create the table inside a local folder that already holds other files."""
    if "://" in uri:
        return
    p = Path(uri)
    if p.exists() and not p.is_dir():
        raise TableLocationError(f"MMFS_TABLE_URI={uri} is a file, not a Lance table folder")
    if p.is_dir() and not (p / "_versions").is_dir() and any(p.iterdir()):
        raise TableLocationError(
            f"MMFS_TABLE_URI={uri} is a non-empty folder that is not a Lance table: refusing to create "
            "the table inside it (point MMFS_TABLE_URI at a new path, e.g. .../videos.lance)"
        )


def open_or_create(table: TableRef | str) -> lance.LanceDataset:
    """Open the table, creating it empty (with stable row ids) if it does not exist yet.

    Two processes may race to create it: the loser sees "already exists" and opens the winner's table.
    """
    table = TableRef.of(table)
    ds = _exists(table)
    if ds is not None:
        return ds
    check_location(table.uri)
    try:
        return lance.write_dataset(
            INGEST_SCHEMA.empty_table(),
            table.uri,
            mode="create",
            enable_stable_row_ids=True,
            storage_options=table.options,
            transaction_properties={"mmfs.op": "create"},
        )
    except OSError as e:
        if "already exists" not in str(e).lower():
            raise
        return table.dataset()


def append_rows(
    table: TableRef | str,
    rows: pa.Table,
    properties: dict[str, str],
    fragment_rows: int = FRAGMENT_ROWS,
    on_retry: Callable[[int, BaseException], None] | None = None,
) -> lance.LanceDataset:
    """Append ingest rows in one commit (new fragments only; nothing existing is rewritten).

    Fragments hold at most ``fragment_rows`` rows: a feature fill commits whole fragments, so the
    fragment size is both its unit of crash loss and of rewrite (a fill rewrites its columns' file of
    each fragment it touches, once).

    The rows carry only the ingest columns; feature columns of the new rows read as null until filled.
    """
    if rows.schema != INGEST_SCHEMA:
        rows = rows.select(INGEST_SCHEMA.names).cast(INGEST_SCHEMA)
    table = TableRef.of(table)
    props = {"mmfs.op": "append", **properties}
    return retry_commit(lambda _: lance.write_dataset(
        rows,
        table.uri,
        mode="append",
        storage_options=table.options,
        transaction_properties=props,
        allow_external_blob_outside_bases=True,
        max_rows_per_file=fragment_rows,
    ), on_retry=on_retry)
