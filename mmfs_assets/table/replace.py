"""Column-only writes: replace a few columns for some rows with Lance's DataReplacement.

This is the heart of the write path. For every fragment that holds a target row we write ONE new data
file holding ONLY the replaced columns for ALL of the fragment's physical rows (existing values carried
over, the new values put in place, nulls at deleted offsets) and commit the files with
``LanceOperation.DataReplacement``. Nothing else is rewritten: the video blobs and the other groups'
columns stay in their files. ``update``/``merge_insert`` would rewrite whole rows, blobs included, and
``DataOverlay`` corrupts the dataset in pylance 14, so neither is used.

DataReplacement validates nothing (a short file or a wrong type commits and breaks every later read),
so row counts and exact Arrow types are checked here before anything is committed. A lost commit race
re-reads the latest version and redoes only the cheap file writes; the values were computed before and
are reused as they are.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import lance
import numpy as np
import pyarrow as pa
from lance.file import LanceFileWriter
from lance.fragment import DataFile

from mmfs_assets.table.retry import MAX_ATTEMPTS, retry_commit
from mmfs_loader.contract.table import TableRef

ROWID = "_rowid"
_OFFSET_MASK = 0xFFFFFFFF


class ReplaceError(RuntimeError):
    """Values cannot be written as given (unknown column, wrong type, rows that no longer exist)."""


@dataclass(frozen=True)
class ReplaceReport:
    version: int
    attempts: int
    fragments: int
    rows: int


def _leaf_ids(field) -> list[int]:
    children = field.children()
    return [field.id()] if not children else [i for c in children for i in _leaf_ids(c)]


def _locate(ds: lance.LanceDataset, locate_filter: str, rowids: np.ndarray) -> dict[int, np.ndarray]:
    """Fragment id -> the target row ids it holds, found with a projected, filtered scan."""
    loc = ds.to_table(columns=[], filter=locate_filter, with_row_id=True, with_row_address=True)
    ids = loc[ROWID].to_numpy()
    frags = (loc["_rowaddr"].to_numpy() >> 32).astype(np.int64)
    wanted = np.isin(ids, rowids)
    found = ids[wanted]
    if len(found) != len(rowids):
        missing = np.setdiff1d(rowids, found)
        raise ReplaceError(
            f"{len(missing)} target rows are not in the table under {locate_filter!r} "
            f"(deleted concurrently?): row ids {missing[:5].tolist()}..."
        )
    out: dict[int, np.ndarray] = {}
    for fid in np.unique(frags[wanted]):
        out[int(fid)] = found[frags[wanted] == fid]
    return out


def _fragment_file(
    ds: lance.LanceDataset,
    fid: int,
    values: pa.Table,
    value_index: dict[int, int],
    fields: list[pa.Field],
    table: TableRef,
) -> DataFile:
    """Write one data file with the replaced columns for every physical row of fragment ``fid``."""
    frag = ds.get_fragment(fid)
    if frag is None:
        raise ValueError(f"fragment {fid} is not in version {ds.version} of the table")
    n = frag.physical_rows
    names = [f.name for f in fields]
    cur = frag.to_table(columns=names, with_row_id=True, with_row_address=True)  # live rows only
    offsets = (cur["_rowaddr"].to_numpy() & _OFFSET_MASK).astype(np.int64)
    cur_ids = cur[ROWID].to_numpy()
    take = np.full(n, -1, dtype=np.int64)
    take[offsets] = np.arange(len(cur), dtype=np.int64)  # carry existing values over
    new_pos = np.array([value_index.get(int(r), -1) for r in cur_ids], dtype=np.int64)
    mine = new_pos >= 0
    take[offsets[mine]] = len(cur) + new_pos[mine]  # this write's values
    idx = pa.array(np.where(take < 0, 0, take), mask=take < 0)
    columns = []
    for f in fields:
        both = pa.concat_arrays([cur[f.name].combine_chunks(), values[f.name].combine_chunks()])
        col = both.take(idx)
        if len(col) != n or col.type != f.type:
            raise ReplaceError(f"fragment {fid}: built {len(col)} x {col.type} for {n} x {f.type} ({f.name})")
        columns.append(col)
    schema = pa.schema(fields)
    fname = f"{uuid.uuid4().hex}.lance"
    base = ds.uri.rstrip("/")
    with LanceFileWriter(
        f"{base}/data/{fname}", schema, version=ds.data_storage_version, storage_options=table.options
    ) as w:
        w.write_batch(pa.table(columns, schema=schema))
    leaf_ids = [i for name in names for i in _leaf_ids(ds.lance_schema.field(name))]
    major, minor = map(int, ds.data_storage_version.split("."))
    return DataFile(
        fname,
        fields=leaf_ids,
        column_indices=list(range(len(leaf_ids))),
        file_major_version=major,
        file_minor_version=minor,
    )


def replace_columns(
    table: TableRef | str,
    values: pa.Table,
    *,
    locate_filter: str,
    properties: dict[str, str],
    max_attempts: int = MAX_ATTEMPTS,
) -> ReplaceReport:
    """Write ``values`` (``_rowid`` plus one column per replaced field) into the table in one commit.

    ``locate_filter`` narrows the scan that finds the rows' fragments (for example the partition's
    ``drop_id = '...'``); every row id in ``values`` must match it.
    """
    if ROWID not in values.column_names:
        raise ReplaceError("values need a _rowid column")
    names = [c for c in values.column_names if c != ROWID]
    rowids = values[ROWID].to_numpy()
    if len(np.unique(rowids)) != len(rowids):
        raise ReplaceError("duplicate row ids in values")
    value_index = {int(r): i for i, r in enumerate(rowids)}
    table = TableRef.of(table)

    def attempt(n: int) -> ReplaceReport:  # a lost race redoes the file write, never the model
        ds = table.dataset()
        if len(values) == 0:
            return ReplaceReport(ds.version, n, 0, 0)
        missing = [c for c in names if c not in ds.schema.names]
        if missing:
            raise ReplaceError(f"columns {missing} are not declared in the table")
        fields = [ds.schema.field(c) for c in names]
        if any("blob" in str(f.type) for f in fields):
            raise ReplaceError("blob columns cannot be replaced with DataReplacement")
        try:
            typed = pa.table(
                [values[f.name].cast(f.type, safe=True) for f in fields], schema=pa.schema(fields)
            )
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise ReplaceError(f"values do not fit the table's column types: {e}") from e
        groups = []
        for fid in _locate(ds, locate_filter, rowids):
            df = _fragment_file(ds, fid, typed, value_index, fields, table)
            groups.append(lance.LanceOperation.DataReplacementGroup(fid, df))
        op = lance.LanceOperation.DataReplacement(groups)
        tx = lance.Transaction(
            read_version=ds.version,
            operation=op,
            transaction_properties={"mmfs.op": "replace", "mmfs.columns": ",".join(names), **properties},
        )
        new = lance.LanceDataset.commit(table.uri, tx, storage_options=table.options)
        return ReplaceReport(new.version, n + 1, len(groups), len(values))

    return retry_commit(attempt, attempts=max_attempts)
