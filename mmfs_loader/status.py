"""Per-drop fill status of every column group: how many rows are filled, errored, missing, and by whom."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import lance

from mmfs_loader import schema as S
from mmfs_loader.sql import is_in


@dataclass
class GroupStatus:
    filled: int = 0
    errored: int = 0
    missing: int = 0
    producers: dict[str, int] = field(default_factory=dict)


@dataclass
class DropStatus:
    drop_id: str
    rows: int = 0
    groups: dict[str, GroupStatus] = field(default_factory=dict)


def table_status(ds: lance.LanceDataset, drops: list[str] | None = None) -> list[DropStatus]:
    """Status per drop, sorted by drop id; reads only the drop, producer and error columns.

    With ``drops``, only those drops' rows are read (through the ``drop_id`` index: the cost follows the
    drops asked for, not the table)."""
    groups = sorted(S.groups_in_schema(ds.schema))
    cols = [S.DROP_ID] + [c for g in groups for c in (f"{g}_producer", f"{g}_error")]
    t = ds.to_table(columns=cols, filter=is_in(S.DROP_ID, drops) if drops else None)
    by_drop: dict[str, DropStatus] = {}
    drop_ids = t[S.DROP_ID].to_pylist()
    for d in drop_ids:
        st = by_drop.setdefault(d, DropStatus(d))
        st.rows += 1
    for g in groups:
        producers = t[f"{g}_producer"].to_pylist()
        errors = t[f"{g}_error"].to_pylist()
        counts: dict[str, GroupStatus] = defaultdict(GroupStatus)
        for d, p, e in zip(drop_ids, producers, errors):
            gs = counts[d]
            if p is None:
                gs.missing += 1
                continue
            gs.producers[p] = gs.producers.get(p, 0) + 1
            if e is None:
                gs.filled += 1
            else:
                gs.errored += 1
        for d, st in by_drop.items():
            st.groups[g] = counts[d]
    return [by_drop[k] for k in sorted(by_drop)]


def drop_ids(ds: lance.LanceDataset) -> list[str]:
    """Every drop in the table, sorted (reads the ``drop_id`` column)."""
    import pyarrow.compute as pc

    return sorted(pc.unique(ds.to_table(columns=[S.DROP_ID])[S.DROP_ID]).to_pylist())
