"""Depth maps as stored in the table: one 16-bit grayscale PNG per sampled frame plus its value range.

A float depth map ``d`` of a frame is stored as ``round((d - lo) / (hi - lo) * 65535)`` in a uint16 PNG
(lossless at 16 bits, viewable with any image tool, about 40% of raw float32 on realistic maps) with
``lo``/``hi`` in the ``depth_min``/``depth_max`` columns. The decoding error is at most
``(hi - lo) / 131070`` per pixel. :func:`decode_depth` turns a row's stored value back into ``[K, H, W]``.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

# Column names of the depth group (value columns; the group adds depth_producer and depth_error).
PNG = "depth_png"
MIN = "depth_min"
MAX = "depth_max"
TIMESTAMPS = "depth_timestamps"

_LEVELS = 65535.0


def encode_frame(depth: np.ndarray) -> tuple[bytes, float, float]:
    """One float depth map ``[H, W]`` -> (uint16 PNG bytes, lo, hi)."""
    d = np.asarray(depth, dtype=np.float32)
    if d.ndim != 2:
        raise ValueError(f"a depth map is [H, W], got shape {d.shape}")
    if not np.isfinite(d).all():
        raise ValueError("depth map holds NaN or infinite values")
    lo, hi = float(d.min()), float(d.max())
    scale = _LEVELS / (hi - lo) if hi > lo else 0.0
    q = np.rint((d - lo) * scale).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(q).save(buf, format="PNG", compress_level=6)
    return buf.getvalue(), lo, hi


def decode_frame(png: bytes, lo: float, hi: float) -> np.ndarray:
    """uint16 PNG bytes and the stored range -> float32 depth ``[H, W]``."""
    with Image.open(io.BytesIO(png)) as im:
        q = np.asarray(im)
    if q.dtype != np.uint16:  # Pillow reads 16-bit PNGs as I;16 (uint16) or I (int32)
        q = q.astype(np.uint16)
    return (lo + q.astype(np.float32) * np.float32((hi - lo) / _LEVELS)).astype(np.float32)


def decode_depth(value: Mapping[str, Any]) -> np.ndarray:
    """A row's depth value (a mapping with ``depth_png``, ``depth_min``, ``depth_max``) -> float32 ``[K, H, W]``.

    Works on a dict row from ``to_pylist()`` or a loader sample. Raises ``ValueError`` for a null value
    (look at ``depth_error`` for the reason) or inconsistent lists.
    """
    pngs: Sequence[bytes] | None = value.get(PNG)
    los, his = value.get(MIN), value.get(MAX)
    if pngs is None or los is None or his is None:
        raise ValueError("no depth stored for this row (see its depth_error)")
    if not (len(pngs) == len(los) == len(his)):
        raise ValueError(f"depth lists differ in length: {len(pngs)} PNGs, {len(los)} minima, {len(his)} maxima")
    frames = [decode_frame(p, lo, hi) for p, lo, hi in zip(pngs, los, his)]
    if not frames:
        return np.zeros((0, 0, 0), np.float32)
    return np.stack(frames)
