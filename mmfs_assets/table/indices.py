"""The table's indices: scalar indices for row lookups, vector and full-text indices for search.

- ``drop_id`` (BITMAP) and ``id`` (BTREE): every fill and status lookup filters on them, so with these the
  cost of a lookup follows the partition, not the table. They are created by the first ingest and brought
  up to date after each append (rows appended since are still found: Lance scans unindexed fragments).
- One vector index per embedding column (IVF_PQ, cosine) once the table holds :data:`VECTOR_MIN_ROWS`
  rows: below that an exact scan is as fast and exact. Fills replace embedding files fragment by fragment,
  which drops those fragments out of the index until :func:`optimize` (search still finds them, flat).
- A full-text (inverted) index on ``caption``.

Building an index over a column races the fills of that column (Lance refuses the fill's commit as a
retryable conflict, and the fill retries), so the search indices are built by the ``search_indices``
asset and by maintenance, after fills, never inside them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import lance
import pyarrow as pa

from mmfs_assets.table.retry import retry_commit
from mmfs_loader.contract import schema as S
from mmfs_loader.contract.table import TableRef

SCALAR_INDICES = {S.DROP_ID: "BITMAP", S.ID: "BTREE"}
CAPTION_COLUMN = "caption"
VECTOR_MIN_ROWS = 50_000  # below this, exact search over the column is fast enough and exact
VECTOR_METRIC = "cosine"


def index_name(column: str, kind: str) -> str:
    return f"{column}_{kind.lower()}"


@dataclass
class IndexReport:
    created: list[str] = field(default_factory=list)
    optimized: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # index or column -> why not built


def existing(ds: lance.LanceDataset) -> dict[str, list[str]]:
    """Index name -> the columns it covers."""
    return {d.name: list(d.field_names) for d in ds.describe_indices()}


def _covered(ds: lance.LanceDataset) -> set[str]:
    return {c for cols in existing(ds).values() for c in cols}


def embedding_columns(schema: pa.Schema) -> list[str]:
    """Feature columns holding fixed-size float vectors (the searchable embeddings)."""
    out = []
    for f in schema:
        t = f.type
        if S.GROUP_KEY in (f.metadata or {}) and pa.types.is_fixed_size_list(t) and pa.types.is_floating(t.value_type):
            out.append(f.name)
    return out


def ensure_scalar_indices(table: TableRef | str) -> IndexReport:
    """Create the ``drop_id``/``id`` indices if missing, else index the fragments appended since."""
    table = TableRef.of(table)
    rep = IndexReport()

    def attempt(_: int) -> None:
        ds = table.dataset()
        if ds.count_rows() == 0:
            return
        have = _covered(ds)
        for col, kind in SCALAR_INDICES.items():
            if col not in have:
                ds.create_scalar_index(col, kind, name=index_name(col, kind))  # type: ignore[arg-type]
                rep.created.append(index_name(col, kind))
        stale = [n for n in _names_for(ds, SCALAR_INDICES) if unindexed_rows(ds, n) > 0]
        if stale:
            ds.optimize.optimize_indices(index_names=stale)
            rep.optimized.extend(stale)

    retry_commit(attempt)
    return rep


def _names_for(ds: lance.LanceDataset, columns) -> list[str]:
    return [n for n, cols in existing(ds).items() if any(c in columns for c in cols)]


def unindexed_rows(ds: lance.LanceDataset, name: str) -> int:
    return int(ds.stats.index_stats(name).get("num_unindexed_rows", 0))


def ivf_pq_params(rows: int, dim: int) -> dict:
    """IVF_PQ shape for ``rows`` x ``dim``: about sqrt(rows) lists (at least 4 rows x 256 per list for
    training) and 16-d sub-vectors (8 bits each), refined at query time (:mod:`mmfs_assets.store.search`)."""
    parts = max(1, min(int(math.sqrt(rows)), rows // 256 or 1, 4096))
    sub = next(s for s in (dim // 16, dim // 8, dim // 4, dim // 2, dim, 1) if s >= 1 and dim % s == 0)
    return {"num_partitions": parts, "num_sub_vectors": sub}


def ensure_search_indices(table: TableRef | str, *, vector_min_rows: int = VECTOR_MIN_ROWS) -> IndexReport:
    """Build missing vector and caption indices, then fold new and refilled fragments into all indices."""
    table = TableRef.of(table)
    rep = IndexReport()
    ds = table.dataset()
    have = _covered(ds)
    rows = ds.count_rows()
    for col in embedding_columns(ds.schema):
        if col in have:
            continue
        filled = ds.count_rows(filter=f"`{col}` IS NOT NULL")
        if filled < vector_min_rows:
            rep.skipped[col] = f"{filled} vectors < {vector_min_rows}: exact search"
            continue
        dim = ds.schema.field(col).type.list_size
        name = index_name(col, "ivf_pq")
        params = ivf_pq_params(filled, dim)

        def build(_n: int, col: str = col, name: str = name, params: dict = params) -> None:
            table.dataset().create_index(col, "IVF_PQ", name=name, metric=VECTOR_METRIC, **params)

        retry_commit(build)
        rep.created.append(name)
    if CAPTION_COLUMN in ds.schema.names and CAPTION_COLUMN not in have and rows:
        name = index_name(CAPTION_COLUMN, "fts")
        retry_commit(lambda _n: table.dataset().create_scalar_index(CAPTION_COLUMN, "INVERTED", name=name))
        rep.created.append(name)
    rep.optimized = optimize(table)
    return rep


def optimize(table: TableRef | str) -> list[str]:
    """Fold unindexed fragments into every index that has some; returns the indices it touched."""
    table = TableRef.of(table)
    touched: list[str] = []

    def attempt(_: int) -> None:
        ds = table.dataset()
        stale = [n for n in existing(ds) if unindexed_rows(ds, n) > 0]
        if stale:
            ds.optimize.optimize_indices(index_names=stale)
        touched[:] = stale

    retry_commit(attempt)
    return touched


def index_status(ds: lance.LanceDataset) -> list[dict]:
    """Per index: name, columns, type, indexed and unindexed rows."""
    out = []
    for d in ds.describe_indices():
        st = ds.stats.index_stats(d.name)
        out.append({
            "name": d.name, "columns": list(d.field_names), "type": st.get("index_type", d.type_url.rsplit(".", 1)[-1]),
            "indexed_rows": int(st.get("num_indexed_rows", 0)), "unindexed_rows": int(st.get("num_unindexed_rows", 0)),
        })
    return out
