"""A chunk's computed values (or errors) as the Arrow table a column-only commit writes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from mmfs_assets.features.spec import Feature

Result = tuple[dict[str, Any] | None, str | None]  # (values, error)


def column(values: list[Any], f: pa.Field) -> pa.Array:
    t = f.type
    if pa.types.is_fixed_size_list(t) and pa.types.is_floating(t.value_type):
        mask = np.array([v is None for v in values])
        flat = np.zeros((len(values), t.list_size), dtype=t.value_type.to_pandas_dtype())
        for i, v in enumerate(values):
            if v is not None:
                flat[i] = np.asarray(v, dtype=flat.dtype).reshape(t.list_size)
        return pa.FixedSizeListArray.from_arrays(
            pa.array(flat.reshape(-1)), t.list_size, mask=pa.array(mask) if mask.any() else None
        )
    return pa.array(values, type=t)


def values_table(feature: Feature, producer: str | dict[int, str], rowids: list[int],
                 results: dict[int, Result]) -> pa.Table:
    """``producer``: one for every row, or each row's (by row id: rows sampled in different modes)."""
    g = feature.group
    cols: dict[str, pa.Array] = {"_rowid": pa.array(rowids, pa.uint64())}
    for f in g.value_fields:
        cols[f.name] = column([(results[r][0] or {}).get(f.name) for r in rowids], f)
    per_row = producer if isinstance(producer, dict) else dict.fromkeys(rowids, producer)
    cols[g.producer_column] = pa.array([per_row[r] for r in rowids], pa.string())
    cols[g.error_column] = pa.array([results[r][1] for r in rowids], pa.string())
    return pa.table(cols)
