"""Data versions: a digest of what a partition holds, so an unchanged re-run keeps its version."""

from __future__ import annotations

import hashlib

import pyarrow as pa


def table_digest(t: pa.Table, sort_by: str) -> str:
    """Order-independent digest of a small table (sorted by ``sort_by``)."""
    h = hashlib.sha256()
    if len(t):
        t = t.sort_by(sort_by)
    for name in t.column_names:
        h.update(name.encode())
        for v in t[name].to_pylist():
            h.update(repr(v).encode())
            h.update(b"\x1f")
    return h.hexdigest()[:16]
