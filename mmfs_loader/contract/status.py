"""Per-drop fill status of every column group: how many rows are filled, errored, missing, by whom, and how
many took the same frame more than once (their ``<group>_timestamps`` repeat a time)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import lance
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mmfs_loader.contract import schema as S
from mmfs_loader.contract.sql import is_in


@dataclass
class GroupStatus:
    filled: int = 0
    errored: int = 0
    missing: int = 0
    producers: dict[str, int] = field(default_factory=dict)
    # rows per producer whose frames repeat (fewer distinct frames than the feature asked for)
    repeated: dict[str, int] = field(default_factory=dict)

    @property
    def rows_with_repeated_frames(self) -> int:
        return sum(self.repeated.values())


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
    names = set(ds.schema.names)
    stamped = {g for g in groups if f"{g}_timestamps" in names}
    cols = [S.DROP_ID] + [c for g in groups for c in (f"{g}_producer", f"{g}_error")] + [f"{g}_timestamps" for g in sorted(stamped)]
    t = ds.to_table(columns=cols, filter=is_in(S.DROP_ID, drops) if drops else None)
    by_drop: dict[str, DropStatus] = {}
    drop_ids = t[S.DROP_ID].to_pylist()
    for d in drop_ids:
        st = by_drop.setdefault(d, DropStatus(d))
        st.rows += 1
    for g in groups:
        producers = t[f"{g}_producer"].to_pylist()
        errors = t[f"{g}_error"].to_pylist()
        repeats = repeated_times(t[f"{g}_timestamps"]) if g in stamped else np.zeros(len(drop_ids), dtype=bool)
        counts: dict[str, GroupStatus] = defaultdict(GroupStatus)
        for d, p, e, r in zip(drop_ids, producers, errors, repeats):
            gs = counts[d]
            if p is None:
                gs.missing += 1
                continue
            gs.producers[p] = gs.producers.get(p, 0) + 1
            if r:
                gs.repeated[p] = gs.repeated.get(p, 0) + 1
            if e is None:
                gs.filled += 1
            else:
                gs.errored += 1
        for d, st in by_drop.items():
            st.groups[g] = counts[d]
    return [by_drop[k] for k in sorted(by_drop)]


def repeated_times(stamps: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Per row of a list column of frame times: whether a time occurs twice (a frame taken more than once).
    The times of a row are ascending (both sampling modes return them so), so equal neighbours are repeats."""
    arr = stamps.combine_chunks() if isinstance(stamps, pa.ChunkedArray) else stamps
    n = len(arr)
    lengths = pc.fill_null(pc.list_value_length(arr), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    values = pc.list_flatten(arr).to_numpy(zero_copy_only=False)
    out = np.zeros(n, dtype=bool)
    if len(values) < 2:
        return out
    row_of = np.repeat(np.arange(n), lengths)
    dup = (values[1:] == values[:-1]) & (row_of[1:] == row_of[:-1])
    out[row_of[1:][dup]] = True
    return out


def drop_ids(ds: lance.LanceDataset) -> list[str]:
    """Every drop in the table, sorted (reads the ``drop_id`` column)."""
    import pyarrow.compute as pc

    return sorted(pc.unique(ds.to_table(columns=[S.DROP_ID])[S.DROP_ID]).to_pylist())
