"""Arrow rows -> what a training step wants: tensors for numbers and vectors, str for text.

One conversion per column and block (not per cell): a ``fixed_size_list<float32, D>`` column becomes
one ``[B, D]`` tensor view of the Arrow buffer, numeric columns one ``[B]`` tensor. Depth columns
(``depth_png``/``depth_min``/``depth_max``) are decoded together into float32 ``depth`` ``[K, H, W]``.

In a batch, ``depth`` is always a list with one entry per sample: a float32 tensor ``[K, H, W]`` at that
video's resolution (or None where no depth is stored), never stacked, so a batch of equal resolutions and a
batch of mixed ones have the same type (``torch.stack(batch["depth"])`` where the job knows they match).
Clips' ``frames`` follow the clip spec, never the batch: a tensor ``[B, T, C, S, S]`` when clips are cropped
to a size, a list of ``[T, C, H, W]`` tensors when they keep their shape (:func:`list_keys_for`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from mmfs_loader.contract import depth as D

DEPTH_PARTS = (D.PNG, D.MIN, D.MAX)
DEPTH = "depth"
# Keys whose batch value is always a per-sample list: their shapes vary with the video (depth maps keep
# each video's resolution), and a type that changes with the batch's mix of resolutions is no type at all.
LIST_KEYS = frozenset({DEPTH})
FRAMES = "frames"


def list_keys_for(clip: Any) -> frozenset[str]:
    """The per-sample-list keys of a dataset with clip spec ``clip`` (a ``ClipSpec`` or None): clips that
    keep their video's shape are a list too."""
    return LIST_KEYS | {FRAMES} if clip is not None and not clip.fixed_shape else LIST_KEYS


def _fixed_matrix(col: pa.ChunkedArray) -> np.ndarray | None:
    """``[B, D]`` for a null-free fixed-size list of numbers, else None."""
    t = col.type
    if not pa.types.is_fixed_size_list(t) or not (pa.types.is_integer(t.value_type) or pa.types.is_floating(t.value_type)):
        return None
    arr = col.combine_chunks()
    if arr.null_count:
        return None
    flat = arr.flatten().to_numpy(zero_copy_only=False)
    return flat.reshape(len(arr), t.list_size)


def number_array(col: pa.ChunkedArray | pa.Array) -> np.ndarray | None:
    """A writable numpy copy of a null-free number column (``[B]``) or fixed-size vector column
    (``[B, D]``): what :func:`columns_of_block` turns into a tensor; None for other columns."""
    if isinstance(col, pa.Array):
        col = pa.chunked_array([col], type=col.type)
    m = _fixed_matrix(col)
    if m is not None:
        return m.copy()
    if _is_number(col.type) and col.null_count == 0:
        return col.to_numpy().copy()
    return None


MAX_SHORT_STRING = 256


def short_strings(col: pa.ChunkedArray | pa.Array) -> np.ndarray | None:
    """A fixed-width bytes array (``S<n>``) of a null-free column of short ASCII strings, else None.

    Gathering rows from it and decoding costs about 36 us per 256 ids here, where Arrow's ``take`` and
    ``to_pylist`` cost 280 us. Values ending in NUL are left to Arrow (numpy would strip the NULs)."""
    t = col.type
    if not (pa.types.is_string(t) or pa.types.is_large_string(t)) or col.null_count or len(col) == 0:
        return None
    if not pc.all(pc.string_is_ascii(col)).as_py():
        return None
    longest = pc.max(pc.binary_length(col)).as_py() or 1
    if longest > MAX_SHORT_STRING or pc.any(pc.ends_with(col, "\x00")).as_py():
        return None
    return np.array(col.to_pylist(), dtype=f"S{longest}")


def strings_at(arr: np.ndarray, positions: np.ndarray) -> list[str]:
    """The ``str`` values of a :func:`short_strings` array at ``positions``."""
    return [x.decode("ascii") for x in arr[positions].tolist()]


def _is_number(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)


def columns_of_block(t: pa.Table) -> dict[str, Any]:
    """Per output key, a column of the block: a tensor ``[B, ...]`` or a list of per-row values."""
    out: dict[str, Any] = {}
    names = set(t.column_names)
    depth = all(p in names for p in DEPTH_PARTS)
    for name in t.column_names:
        if depth and name in DEPTH_PARTS:
            continue
        col = t[name]
        m = _fixed_matrix(col)
        if m is not None:
            out[name] = torch.from_numpy(m.copy())  # Arrow buffers are read-only
        elif _is_number(col.type) and col.null_count == 0:
            out[name] = torch.from_numpy(col.to_numpy().copy())
        elif pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
            vt = col.type.value_type
            vals = col.to_pylist()
            out[name] = [None if v is None else (torch.tensor(v) if _is_number(vt) else v) for v in vals]
        elif pa.types.is_timestamp(col.type):
            out[name] = [None if v is None else v.isoformat() for v in col.to_pylist()]
        else:
            out[name] = col.to_pylist()
    if depth:
        rows = t.select(list(DEPTH_PARTS)).to_pylist()
        out[DEPTH] = [None if r[D.PNG] is None else torch.from_numpy(D.decode_depth(r)) for r in rows]
    return out


def _cell(v: Any, i: int) -> Any:
    if isinstance(v, torch.Tensor):
        x = v[i]
        return x.item() if x.dim() == 0 else x
    return v[i]


def rows_of_block(cols: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """Per-row samples from :func:`columns_of_block` (numbers as Python scalars, vectors as tensors)."""
    return [{k: _cell(v, i) for k, v in cols.items()} for i in range(n)]


def stack_or_list(values: Sequence[Any]) -> Any:
    """A tensor batch when every value is a tensor of one shape, else the list."""
    if values and all(isinstance(v, torch.Tensor) for v in values) and len({tuple(v.shape) for v in values}) == 1:
        return torch.stack(list(values))
    return list(values)


def batch_of_block(cols: dict[str, Any], list_keys: frozenset[str] = LIST_KEYS) -> dict[str, Any]:
    """A collated batch from :func:`columns_of_block`: lists of equal-shape tensors are stacked, except
    ``list_keys`` (``depth``: float32 ``[K, H, W]`` tensors or None; uncropped clips), one entry per sample."""
    return {k: v if isinstance(v, torch.Tensor) else list(v) if k in list_keys else stack_or_list(v)
            for k, v in cols.items()}


def collate(samples: Sequence[dict[str, Any]], list_keys: frozenset[str] = LIST_KEYS) -> dict[str, Any]:
    """Collate per-row samples: numbers -> a tensor, equal-shape tensors -> stacked, the rest -> lists
    (None and str stay lists, where ``default_collate`` would fail). ``list_keys`` are always a list, one
    entry per sample, whatever the shapes in the batch (``depth``; uncropped clips' ``frames``)."""
    if not samples:
        return {}
    out: dict[str, Any] = {}
    for k in samples[0]:
        vals = [s[k] for s in samples]
        if k in list_keys:
            out[k] = vals
        elif all(isinstance(v, bool) for v in vals):
            out[k] = torch.tensor(vals, dtype=torch.bool)
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
            out[k] = torch.tensor(vals)
        else:
            out[k] = stack_or_list(vals)
    return out
