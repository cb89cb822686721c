"""Near-duplicate groups from the embeddings: the ``dup_group`` column the loader can filter on.

Two videos are near-duplicates when the cosine distance of their embeddings (``MMFS_DUP_DISTANCE``,
default 0.03) is at most the threshold: the same clip re-encoded, resized or trimmed. For each row of a
partition, its ``k`` nearest rows in the whole table are looked up (through the vector index when there is
one); rows linked by such pairs form a group, named by the smallest id in it, or by the group an earlier
partition already gave one of them, so groups stay stable as drops arrive. A row that is alone has its own
id as its group: ``filter="dup_group = id"`` keeps one video per group.

Rows of the partition without an embedding (their fill failed) get an error instead of a group. The
groups are written with a column-only commit (no video bytes are rewritten).
"""

from __future__ import annotations

from dataclasses import dataclass

import lance
import numpy as np
import pyarrow as pa

from mmfs_assets.table.columns import ensure_group_columns
from mmfs_assets.table.indices import VECTOR_METRIC
from mmfs_assets.table.replace import ROWID, replace_columns
from mmfs_loader.contract import schema as S
from mmfs_loader.contract.sql import equals
from mmfs_loader.contract.table import TableRef

CODE_VERSION = "dup-v1"
GROUP = S.ColumnGroup("dup_group", (pa.field("dup_group", pa.string()),))
NEIGHBOURS = 10


@dataclass
class DupReport:
    rows: int
    grouped: int  # rows in a group with at least one other video
    groups: int  # groups with more than one video touching this partition
    errors: int
    version: int
    producer: str


def producer(column: str, distance: float) -> str:
    return f"dup_group:{CODE_VERSION}|column={column}|distance={distance:g}"


class _Union:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, a: str) -> str:
        self.parent.setdefault(a, a)
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def join(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def assign(ds: lance.LanceDataset, drop_id: str, column: str, distance: float, k: int = NEIGHBOURS) -> tuple[pa.Table, DupReport]:
    """The ``dup_group`` values of the partition's rows (``_rowid`` + group columns) and a report."""
    prod = producer(column, distance)
    have_groups = "dup_group" in ds.schema.names
    cols = [S.ID, column] + (["dup_group"] if have_groups else [])
    rows = ds.to_table(columns=cols, filter=equals(S.DROP_ID, drop_id), with_row_id=True)
    ids = rows[S.ID].to_pylist()
    vecs = rows[column].to_pylist()
    uf = _Union()
    label: dict[str, str] = {}  # an existing group of a row outside this partition
    for rid, v in zip(ids, vecs):
        if v is None:
            continue
        uf.find(rid)
        hits = ds.to_table(
            columns=[S.ID, "_distance"] + (["dup_group"] if have_groups else []), disable_scoring_autoprojection=True,
            nearest={"column": column, "q": np.asarray(v, np.float32), "k": k + 1, "metric": VECTOR_METRIC,
                     "refine_factor": 10},
            filter=f"`{column}` IS NOT NULL", prefilter=True,
        )
        for h in hits.to_pylist():
            if h[S.ID] != rid and h["_distance"] <= distance:
                uf.join(rid, h[S.ID])
                if have_groups and h.get("dup_group"):
                    label[h[S.ID]] = h["dup_group"]
    comp_label: dict[str, str] = {}
    for member in list(uf.parent):
        root = uf.find(member)
        cand = label.get(member, member)
        comp_label[root] = min(comp_label.get(root, cand), cand)
    groups: list[str | None] = []
    errors: list[str | None] = []
    sizes: dict[str, int] = {}
    for rid, v in zip(ids, vecs):
        if v is None:
            groups.append(None)
            errors.append(f"no {column} value (its fill failed or has not run)")
            continue
        g = comp_label[uf.find(rid)]
        groups.append(g)
        errors.append(None)
        sizes[g] = sizes.get(g, 0) + 1
    roots_multi = {uf.find(m) for m in uf.parent if uf.find(m) != m}
    multi = {comp_label[r] for r in roots_multi}
    grouped = sum(1 for g in groups if g is not None and g in multi)
    values = pa.table({
        ROWID: rows[ROWID], "dup_group": pa.array(groups, pa.string()),
        GROUP.producer_column: pa.array([prod] * len(ids), pa.string()),
        GROUP.error_column: pa.array(errors, pa.string()),
    })
    rep = DupReport(len(ids), grouped, len({g for g in groups if g in multi}), sum(e is not None for e in errors),
                    ds.version, prod)
    return values, rep


def _changed(ds: lance.LanceDataset, drop_id: str, values: pa.Table) -> bool:
    cols = [c for c in values.column_names if c != ROWID]
    cur = ds.to_table(columns=cols, filter=equals(S.DROP_ID, drop_id), with_row_id=True)
    key = {r[ROWID]: tuple(r[c] for c in cols) for r in cur.to_pylist()}
    return any(key.get(r[ROWID]) != tuple(r[c] for c in cols) for r in values.to_pylist())


def fill_dup_groups(table: TableRef | str, drop_id: str, *, column: str, distance: float,
                    properties: dict[str, str]) -> DupReport:
    """Compute and write the partition's ``dup_group`` values in one column-only commit."""
    table = TableRef.of(table)
    ensure_group_columns(table, GROUP)
    ds = table.dataset()
    values, rep = assign(ds, drop_id, column, distance)
    if values.num_rows and _changed(ds, drop_id, values):  # a re-run that changes nothing commits nothing
        out = replace_columns(table, values, locate_filter=equals(S.DROP_ID, drop_id),
                              properties={**properties, "mmfs.producer": rep.producer})
        rep.version = out.version
    return rep
