"""Search the table: by text (embedded with the stored vectors' own model), by example, by caption words.

Vectors from different models live in different spaces, so a text query is embedded with the text tower
of the exact producer that made the stored vectors, and only rows of that producer are searched. When the
model this machine loads (from the same settings as the fills) is not that producer, the search refuses
and says which producer the vectors need. Searches use the column's IVF_PQ index when there is one
(refined with exact distances of the ``refine_factor * k`` best candidates) and an exact scan otherwise;
rows filled after the index was last optimised are scanned exactly and merged in by Lance.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import lance
import numpy as np
import pyarrow as pa

from mmfs_assets.table.indices import VECTOR_METRIC, embedding_columns
from mmfs_loader.contract import schema as S
from mmfs_loader.contract.sql import equals
from mmfs_loader.contract.table import TableRef

NPROBES = 32
REFINE_FACTOR = 50  # re-rank 50 x k PQ candidates exactly: PQ alone misses neighbours at 1M rows (bench/search.py)
RESULT_COLUMNS = [S.ID, S.FILE_NAME, S.DROP_ID]


class SearchError(ValueError):
    """The search cannot run as asked (no embeddings, unknown id, no matching model)."""


@dataclass(frozen=True)
class Query:
    k: int = 10
    where: str | None = None
    nprobes: int = NPROBES
    refine_factor: int = REFINE_FACTOR


def check_filter(ds: lance.LanceDataset, where: str | None) -> None:
    """Raise :class:`SearchError` (a usage error) for a filter Lance cannot plan on ``ds``: an unknown column
    (with the closest column names), a syntax or type error. Planning reads no rows."""
    if not where:
        return
    try:
        ds.scanner(columns=[S.ID], filter=where, limit=0).explain_plan()
    except (ValueError, pa.ArrowInvalid) as e:  # pylance: "Invalid user input: Schema error: No field named x..."
        raise SearchError(filter_problem(where, str(e), ds.schema.names)) from e


def filter_problem(where: str, error: str, columns: list[str]) -> str:
    """What is wrong with the filter ``where``, from Lance's error: an unknown column is named with the
    closest column names (by spelling; Lance's own "Did you mean" suggestion can be far off)."""
    import difflib
    import re

    unknown = re.search(r"No field named ([^\s,]+?)\.?(?:\s|,|$)", error)
    if unknown:
        name = unknown.group(1).strip("`'\"")
        close = difflib.get_close_matches(name, columns, n=3, cutoff=0.6) or difflib.get_close_matches(
            name.lower(), [c.lower() for c in columns], n=3, cutoff=0.5)
        return (f"bad filter {where!r}: no column {name!r}"
                + (f"; did you mean {' or '.join(close)}?" if close else "; `mmfs sql \"DESCRIBE videos\"` lists the columns"))
    first = next((ln.strip() for ln in error.splitlines() if ln.strip()), error)
    first = re.sub(r",?\s*/\S+?\.rs:\d+:\d+", "", first).removeprefix("Invalid user input: ").strip()
    return f"bad filter {where!r}: {first}"


def _and(*parts: str | None) -> str | None:
    parts_ = [f"({p})" for p in parts if p]
    return " AND ".join(parts_) or None


def pick_column(ds: lance.LanceDataset, column: str | None) -> str:
    cols = embedding_columns(ds.schema)
    if column is None:
        if not cols:
            raise SearchError("the table has no embedding column to search")
        return cols[0]
    if column not in cols:
        raise SearchError(f"{column!r} is not an embedding column (have: {', '.join(cols) or 'none'})")
    return column


PRODUCER_SAMPLE = 10_000  # rows read to find the vectors' main producer: a search never scans the table


def producer_of(ds: lance.LanceDataset, column: str, where: str | None = None) -> str:
    """The producer of most stored vectors of ``column`` among the first :data:`PRODUCER_SAMPLE` rows
    matching ``where`` (a table is filled by one producer at a time; a search is per query, so it reads a
    bounded sample, not the whole producer column)."""
    group = S.group_of(ds.schema, column) or column
    prod = f"{group}_producer"
    t = ds.to_table(columns=[prod], filter=_and(where, f"`{column}` IS NOT NULL"), limit=PRODUCER_SAMPLE)
    counts = Counter(t[prod].to_pylist())
    if not counts:
        raise SearchError(f"no row has a {column} value" + (f" matching {where!r}" if where else ""))
    return counts.most_common(1)[0][0]


def _columns(ds: lance.LanceDataset) -> list[str]:
    return RESULT_COLUMNS + (["caption"] if "caption" in ds.schema.names else [])


def _hits(t: pa.Table, score: str) -> list[dict]:
    out = []
    for r in t.to_pylist():
        out.append({"id": r[S.ID], "file_name": r[S.FILE_NAME], "drop_id": r[S.DROP_ID],
                    "distance" if score == "_distance" else "score": round(float(r[score]), 6),
                    "caption": r.get("caption")})
    return out


def nearest(ds: lance.LanceDataset, column: str, vector: np.ndarray, q: Query, *, extra_filter: str | None = None,
            exact: bool = False) -> list[dict]:
    """The ``k`` rows nearest to ``vector`` (cosine distance), filtered by the query's ``where``."""
    t = ds.to_table(
        columns=[*_columns(ds), "_distance"], disable_scoring_autoprojection=True,
        nearest={"column": column, "q": np.asarray(vector, dtype=np.float32), "k": q.k, "metric": VECTOR_METRIC,
                 "nprobes": q.nprobes, "refine_factor": q.refine_factor, "use_index": not exact},
        filter=_and(q.where, extra_filter), prefilter=True,
    )
    return _hits(t, "_distance")


def like(table: TableRef, row_id: str, q: Query, *, column: str | None = None, version: int | None = None,
         tag: str | None = None) -> list[dict]:
    """Neighbours of the video ``row_id`` (itself left out)."""
    ds = table.open(version=version, tag=tag)
    check_filter(ds, q.where)
    column = pick_column(ds, column)
    group = S.group_of(ds.schema, column) or column
    t = ds.to_table(columns=[column, f"{group}_producer"], filter=equals(S.ID, row_id))
    if t.num_rows == 0:
        raise SearchError(f"no video with id {row_id!r} in version {ds.version}")
    vec = t[column][0].as_py()
    if vec is None:
        raise SearchError(f"video {row_id!r} has no {column} value (not filled, or its fill failed)")
    same = equals(f"{group}_producer", t[f"{group}_producer"][0].as_py())
    hits = nearest(ds, column, np.array(vec), Query(q.k + 1, q.where, q.nprobes, q.refine_factor),
                   extra_filter=same)
    return [h for h in hits if h["id"] != row_id][: q.k]


def by_caption(table: TableRef, text: str, q: Query, *, version: int | None = None, tag: str | None = None) -> list[dict]:
    """Full-text search of ``caption`` (BM25 score, higher is better)."""
    ds = table.open(version=version, tag=tag)
    check_filter(ds, q.where)
    if "caption" not in ds.schema.names:
        raise SearchError("the table has no caption column")
    if not any("caption" in d.field_names and "Inverted" in d.type_url for d in ds.describe_indices()):
        raise SearchError("no full-text index on caption yet: run `mmfs maintain` (or materialize search_indices in the UI)")
    t = ds.to_table(columns=[*_columns(ds), "_score"], disable_scoring_autoprojection=True, full_text_query=text, limit=q.k, filter=q.where, prefilter=True)
    return _hits(t, "_score")


def by_text(table: TableRef, text: str, q: Query, encoder, *, column: str | None = None, version: int | None = None,
            tag: str | None = None) -> list[dict]:
    """Rows nearest to ``text`` embedded by ``encoder(producer) -> (callable, its producer)``, which must
    load the exact producer of the stored vectors."""
    ds = table.open(version=version, tag=tag)
    check_filter(ds, q.where)
    column = pick_column(ds, column)
    stored = producer_of(ds, column, q.where)
    encode = encoder(column, stored)
    vec = encode([text])[0]
    group = S.group_of(ds.schema, column) or column
    return nearest(ds, column, vec, q, extra_filter=equals(f"{group}_producer", stored))
