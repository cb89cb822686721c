"""Small Lance tables kept beside the shared table: snapshot manifests and the lineage archive.

They live at ``<table without .lance>.mmfs/<name>.lance`` (for ``data/videos.lance``:
``data/videos.mmfs/snapshots.lance``), on the same storage as the table and reached with the same storage
options, so they work on object stores with the same commit guarantees. Outside the table's own folder so
Lance's cleanup of the table never touches them.
"""

from __future__ import annotations

import lance
import pyarrow as pa

from mmfs_assets.table.retry import retry_commit
from mmfs_loader.contract.table import TableRef


def side_uri(table: TableRef, name: str) -> str:
    base = table.uri.rstrip("/")
    stem = base[: -len(".lance")] if base.endswith(".lance") else base
    return f"{stem}.mmfs/{name}.lance"


def _open(table: TableRef, name: str) -> lance.LanceDataset | None:
    try:
        return lance.dataset(side_uri(table, name), storage_options=table.options)
    except (ValueError, OSError) as e:
        if "not found" in str(e).lower() or "does not exist" in str(e).lower():
            return None
        raise


def append(table: TableRef, name: str, rows: pa.Table) -> None:
    """Append ``rows`` (creating the side table on first use); retried when another writer wins a race."""
    if rows.num_rows == 0:
        return

    def attempt(_: int) -> None:
        ds = _open(table, name)
        mode = "append" if ds is not None else "create"
        try:
            lance.write_dataset(rows, side_uri(table, name), mode=mode, storage_options=table.options)
        except (ValueError, OSError) as e:
            if mode == "create" and "already exists" in str(e).lower():  # another process created it first
                raise OSError("conflict: created concurrently") from e
            raise

    retry_commit(attempt)


def read(table: TableRef, name: str, filter: str | None = None) -> pa.Table | None:
    """The side table's rows (matching ``filter``), or None while it does not exist."""
    ds = _open(table, name)
    return None if ds is None else ds.to_table(filter=filter)


def delete(table: TableRef, name: str, filter: str) -> None:
    ds = _open(table, name)
    if ds is not None:
        retry_commit(lambda _n: _open(table, name).delete(filter))  # type: ignore[union-attr]
