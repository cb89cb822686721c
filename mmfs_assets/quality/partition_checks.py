"""Quality of one partition's column group, as numbers and a pass/fail: what the per-partition checks say.

Read from the table after a fill, through the ``drop_id`` index: errors (decode failures, rows the group
itself could not compute) and their share of the partition's rows (for a feature, rows ``video_metadata``
quarantined are left out: that check reports them, and a damaged file must not fail every feature), values missing without an error, and for embedding
columns the L2 norms (NaN or infinite values, zero vectors, and for L2-normalised features norms further
than the tolerance from 1). Thresholds come from settings (``MMFS_CHECK_*``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import lance
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mmfs_loader.contract import schema as S
from mmfs_loader.contract.sql import equals

M = S.METADATA


@dataclass
class QualityOutcome:
    passed: bool
    description: str
    metadata: dict = field(default_factory=dict)


def _vector_columns(ds: lance.LanceDataset, group: S.ColumnGroup) -> list[str]:
    return [c for c in group.value_columns
            if pa.types.is_fixed_size_list(t := ds.schema.field(c).type) and pa.types.is_floating(t.value_type)]


def norms(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """L2 norm per non-null vector."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    arr = values.drop_null() if values.null_count else values
    if len(arr) == 0:
        return np.zeros(0, np.float64)
    flat = np.asarray(arr.flatten().to_numpy(zero_copy_only=False), dtype=np.float64)
    return np.linalg.norm(flat.reshape(len(arr), -1), axis=1)


def group_quality(ds: lance.LanceDataset, group: S.ColumnGroup, drop_id: str, *, max_error_rate: float,
                  norm_tolerance: float, normalized: bool = False) -> QualityOutcome:
    """Errors, nulls without an error and (embeddings) norms of ``group`` in partition ``drop_id``."""
    vec_cols = _vector_columns(ds, group)
    first = group.value_columns[0]
    upstream = M.error_column if group.name != M.name and M.error_column in ds.schema.names else None
    cols = list(dict.fromkeys([first, group.producer_column, group.error_column, *vec_cols, *([upstream] if upstream else [])]))
    t = ds.to_table(columns=cols, filter=equals(S.DROP_ID, drop_id))
    quarantined = 0
    if upstream:  # the metadata step's quarantine is its own check's business, not this group's
        keep = t[upstream].is_null()
        quarantined = t.num_rows - int(pc.sum(keep).as_py() or 0)
        t = t.filter(keep)
    rows = t.num_rows
    errors = rows - t[group.error_column].null_count
    missing = t[group.producer_column].null_count
    value_null = t[first].is_null().to_numpy(zero_copy_only=False)
    no_error = t[group.error_column].is_null().to_numpy(zero_copy_only=False)
    has_producer = t[group.producer_column].is_valid().to_numpy(zero_copy_only=False)
    nulls = int(np.sum(value_null & no_error & has_producer))
    rate = errors / rows if rows else 0.0
    md: dict = {"rows": rows, "errors": errors, "error_rate": round(rate, 4), "nulls_without_error": nulls,
                "not_filled": missing, "max_error_rate": max_error_rate}
    if upstream:
        md["quarantined_by_metadata"] = quarantined
    problems = []
    if rate > max_error_rate:
        problems.append(f"{errors} of {rows} rows ({rate:.0%}) have errors (limit {max_error_rate:.0%})")
    if nulls:
        problems.append(f"{nulls} rows have no value and no error")
    for c in vec_cols:
        n = norms(t[c])
        bad = int(np.sum(~np.isfinite(n) | (n == 0)))
        if normalized:
            bad += int(np.sum(np.isfinite(n) & (n != 0) & (np.abs(n - 1) > norm_tolerance)))
        if len(n):
            fin = n[np.isfinite(n)]
            md.update({f"{c}_norm_min": round(float(fin.min()), 5) if len(fin) else -1,
                       f"{c}_norm_mean": round(float(fin.mean()), 5) if len(fin) else -1,
                       f"{c}_norm_max": round(float(fin.max()), 5) if len(fin) else -1})
        md[f"{c}_bad_norms"] = bad
        if bad:
            what = f"NaN, zero or further than {norm_tolerance} from 1" if normalized else "NaN, infinite or zero"
            problems.append(f"{bad} {c} vectors have norms that are {what}")
    desc = "; ".join(problems) if problems else (
        f"{rows - errors - missing} rows filled, {errors} errors ({rate:.0%}), no empty values"
        + (", norms within tolerance" if vec_cols else "")
        + (f"; {quarantined} rows quarantined by video_metadata not counted" if quarantined else ""))
    return QualityOutcome(not problems, desc, md)
