"""Selection: the SQL filter over the pinned version, turned into sorted row ids, plus the provenance guard.

Row references are Lance stable row ids (the table is written with ``enable_stable_row_ids``): they
identify a row in every version (recipes, clip draws and ``rank_order`` speak of them). Each selected
row also gets its offset in the pinned version (Lance's ``_rowoffset``), what the public ``take``
reads by: the version never changes, so neither do its offsets, and ``take`` by offset measured twice
as fast as by row id. The selection scan reads just these and each requested group's producer and
error columns, never the values.

The guard: for every column group a dataset reads, count the producers among the selected rows, the
rows with no value (not computed yet) and the rows whose value is an error. A training set that mixes
two models' embeddings, or silently skips rows, is a bug that shows up weeks later as a worse model, so
by default such a selection is refused with the counts and the options to override. Producers that differ
only in their ``sampling`` field (``sampling=auto`` picks keyframes or exact frames per video) are one
model, not a mix (:func:`mmfs_loader.contract.schema.producer_model`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, field

import lance
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mmfs_loader.contract import schema as S

M = S.METADATA
SCAN_ROWS = 65536  # rows per batch of the selection scan


class ProvenanceError(ValueError):
    """The selection mixes producers, or holds rows without a value, for a requested column group."""


@dataclass
class GroupCounts:
    """What the selected rows hold for one column group."""

    producers: dict[str, int] = field(default_factory=dict)  # rows with a value, by producer
    missing: int = 0  # rows never computed (producer is null)
    errors: int = 0  # rows whose computation failed (error column set)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Selection:
    """Sorted row ids of the selected rows, and per requested group what they hold."""

    row_ids: np.ndarray  # uint64, ascending
    groups: dict[str, GroupCounts]
    quarantined: int  # rows the filter matched that were left out for a metadata error
    dropped_incomplete: int = 0  # rows left out because a requested group had no value or an error
    offsets: np.ndarray | None = None  # uint64: each row's offset in the pinned version (for ``take``)


def and_filters(*parts: str | None) -> str | None:
    """The SQL conjunction of the given filters (None ones left out), each in parentheses."""
    ps = [p for p in parts if p]
    return " AND ".join(f"({p})" for p in ps) if ps else None


def select(
    table: lance.LanceDataset,
    filter: str | None,
    groups: list[str],
    *,
    include_quarantined: bool = False,
    drop_incomplete: bool = False,
) -> Selection:
    """Scan ``filter`` over ``table`` for the row ids and the producer/error columns of ``groups``."""
    names = set(table.schema.names)
    has_meta = M.error_column in names
    quarantine = f"{M.error_column} IS NOT NULL" if has_meta and not include_quarantined else None
    where = and_filters(filter, f"{M.error_column} IS NULL" if quarantine else None)
    cols = sorted({c for g in groups for c in (f"{g}_producer", f"{g}_error")})
    counts = {g: GroupCounts() for g in groups}
    ids: list[np.ndarray] = []
    offsets: list[np.ndarray] = []
    dropped = 0
    try:
        # Streamed: memory holds the ids and offsets (16 bytes a row), never the producer strings of
        # the whole selection (550 MB at 10M rows).
        for b in table.to_batches(columns=[*cols, "_rowoffset"], filter=where, with_row_id=True, batch_size=SCAN_ROWS):
            t = pa.Table.from_batches([b])
            if drop_incomplete and groups:
                ok = np.ones(t.num_rows, dtype=bool)
                for g in groups:
                    prod, err = t[f"{g}_producer"], t[f"{g}_error"]
                    ok &= ~(prod.is_null().to_numpy(zero_copy_only=False) | err.is_valid().to_numpy(zero_copy_only=False))
                if not ok.all():
                    dropped += int((~ok).sum())
                    t = t.filter(pa.array(ok))
            for g in groups:
                _add_counts(counts[g], t, g)
            ids.append(t["_rowid"].to_numpy().astype(np.uint64))
            offsets.append(t["_rowoffset"].to_numpy().astype(np.uint64))
        quarantined = table.count_rows(filter=and_filters(filter, quarantine)) if quarantine else 0
    except (ValueError, OSError) as e:  # Lance reports bad SQL and unknown columns as these
        raise ValueError(f"cannot apply filter {filter!r}: {e}") from e
    for c in counts.values():
        c.producers = dict(sorted(c.producers.items(), key=lambda kv: str(kv[0])))
    all_ids = np.concatenate(ids) if ids else np.zeros(0, np.uint64)
    all_offsets = np.concatenate(offsets) if offsets else np.zeros(0, np.uint64)
    order = np.argsort(all_ids, kind="stable")
    return Selection(all_ids[order], counts, quarantined, dropped, all_offsets[order])


def _add_counts(c: GroupCounts, t: pa.Table, g: str) -> None:
    """Add one batch's producers, missing values and errors of group ``g`` to ``c``."""
    if not t.num_rows:
        return
    prod, err = t[f"{g}_producer"], t[f"{g}_error"]
    errored = err.is_valid()
    missing = pc.and_(prod.is_null(), pc.invert(errored))
    good = pc.and_(prod.is_valid(), pc.invert(errored))
    for d in pc.value_counts(prod.filter(good)).to_pylist():
        c.producers[d["values"]] = c.producers.get(d["values"], 0) + int(d["counts"])
    c.missing += int(pc.sum(missing).as_py() or 0)
    c.errors += int(pc.sum(errored).as_py() or 0)


def check(
    groups: dict[str, GroupCounts],
    *,
    allow_mixed_producers: bool = False,
    expected: Mapping[str, str | Collection[str]] | None = None,
) -> None:
    """Refuse a selection whose requested groups mix producers or hold rows without a value."""
    problems = []
    for g, c in groups.items():
        if c.missing or c.errors:
            problems.append(
                f"{g}: {c.missing} selected rows have no value yet and {c.errors} have an error "
                f"(see {g}_error); producers {c.producers}"
            )
        models = {S.producer_model(p) for p in c.producers}  # rows sampled at other frames: one model
        if len(models) > 1 and not allow_mixed_producers:
            problems.append(f"{g}: the selected rows mix {len(models)} producers: {c.producers}")
        want = (expected or {}).get(g)
        if want is not None:
            want_set = {want} if isinstance(want, str) else set(want)
            if models - {S.producer_model(p) for p in want_set}:
                problems.append(f"{g}: producers {c.producers} are not the expected {sorted(want_set)}")
    if problems:
        raise ProvenanceError(
            "refusing this selection:\n  - "
            + "\n  - ".join(problems)
            + "\nRecompute the rows (mmfs materialize or a backfill), narrow the filter (e.g. on "
            "`<group>_producer`), or override: guard=Guard(drop_incomplete=True) leaves out rows without a value, "
            "guard=Guard(allow_mixed_producers=True) accepts several producers."
        )
