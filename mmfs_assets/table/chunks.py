"""Splitting a partition's rows into commit chunks of whole fragments."""

from __future__ import annotations

import numpy as np


def fragment_chunks(frag_of: np.ndarray, max_rows: int) -> list[np.ndarray]:
    """Indices into ``frag_of`` grouped into chunks of whole fragments of at most ``max_rows`` rows.

    Each chunk is one column-only commit, so a crash loses at most one chunk of work. A fragment with
    more than ``max_rows`` target rows is split over several chunks (each rewrites that fragment's
    column file, so keep ``max_rows`` near the fragment size for large partitions).
    """
    out: list[np.ndarray] = []
    cur: list[np.ndarray] = []
    size = 0
    for fid in np.unique(frag_of):
        idx = np.flatnonzero(frag_of == fid)
        for part in np.array_split(idx, max(1, -(-len(idx) // max_rows))):
            if cur and size + len(part) > max_rows:
                out.append(np.concatenate(cur))
                cur, size = [], 0
            cur.append(part)
            size += len(part)
    if cur:
        out.append(np.concatenate(cur))
    return out
