"""Ingest rows from files already read: one blob column built from a chunk buffer without a second copy."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
from lance.blob import BlobType

from mmfs_assets.ingest.drops import DropFile
from mmfs_assets.ingest.safe_open import ReadResult
from mmfs_loader.contract import schema as S


@dataclass
class Pending:
    file: DropFile
    read: ReadResult
    uri: str  # where the file is: file:// URI of the real file in a drop folder (no link), or s3:// of the object
    storage: str  # "inline" or "pointer"


def is_utf8(parts: tuple[str, ...]) -> bool:
    """Whether a path (decoded with surrogateescape) is valid UTF-8, as a URI to it must be."""
    try:
        "/".join(parts).encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


class ChunkBuffer:
    """One preallocated buffer the files of a chunk are read into, back to back (no second copy)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.buf: np.ndarray | None = None
        self.used = 0

    def alloc(self, size: int) -> np.ndarray:
        if size > self.capacity - self.used:  # only for a file larger than a whole chunk (sent alone)
            if self.used == 0:
                self.buf = None  # not held beside it: memory stays max(chunk, inline limit)
            return np.empty(size, dtype=np.uint8)
        if self.buf is None:
            self.buf = np.empty(self.capacity, dtype=np.uint8)
        view = self.buf[self.used : self.used + size]
        self.used += size
        return view

    def rollback(self, mark: int) -> None:
        """Forget the allocations made since ``mark`` (a duplicate or a failed read): the space is reused."""
        self.used = min(self.used, mark)

    def contents(self, items: list[Pending]) -> np.ndarray | None:
        """The bytes of ``items`` back to back as one array, without a new buffer; None if they are not
        all in this buffer. When only some of the buffer's files are kept (the others were already in the
        table), the kept ones are moved down over the gaps first (memmove, in order, so none is overwritten
        before it has moved) and their ``data`` views updated."""
        inline = [p for p in items if p.storage == "inline" and p.read.size]
        if self.buf is None or not inline:
            return None
        base = self.buf.ctypes.data
        starts = [p.read.data.ctypes.data - base for p in inline]  # type: ignore[union-attr]  # inline rows have data
        if not all(np.shares_memory(p.read.data, self.buf) for p in inline) or starts != sorted(starts):
            return None
        dst = 0
        for p, start in zip(inline, starts):
            n = p.read.size
            if start != dst:
                ctypes.memmove(base + dst, base + start, n)
                p.read.data = self.buf[dst : dst + n]
            dst += n
        return self.buf[:dst]

    def reset(self) -> None:
        self.used = 0


def blob_column(items: list[Pending], contiguous: np.ndarray | None = None) -> pa.ExtensionArray:
    """A blob v2 array: the bytes already read for inline rows (one Arrow buffer), the URI for pointer rows.

    ``contiguous``: the inline rows' bytes already back to back in one array (used without a copy).
    """
    n = len(items)
    inline = np.array([p.storage == "inline" for p in items], dtype=bool)
    sizes = np.array([p.read.size if p.storage == "inline" else 0 for p in items], dtype=np.int64)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    parts = [p.read.data for p in items if p.storage == "inline" and p.read.size and p.read.data is not None]
    if contiguous is not None:
        data = contiguous
    else:
        data = parts[0] if len(parts) == 1 else (np.concatenate(parts) if parts else np.empty(0, np.uint8))
    validity = None if inline.all() else pa.py_buffer(np.packbits(inline, bitorder="little"))
    payload = pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), n, [validity, pa.py_buffer(offsets), pa.py_buffer(data)], null_count=int((~inline).sum())
    )
    uris = pa.array([None if p.storage == "inline" else p.uri for p in items], pa.utf8())
    storage = pa.StructArray.from_arrays(
        [payload, uris, pa.nulls(n, pa.uint64()), pa.nulls(n, pa.uint64())],
        names=["data", "uri", "position", "size"],
    )
    return pa.ExtensionArray.from_storage(BlobType(), storage)


def ingest_rows(drop_id: str, items: list[Pending], contiguous: np.ndarray | None = None,
                now: datetime | None = None) -> pa.Table:
    now = now or datetime.now(UTC)
    return pa.table(
        {
            S.ID: pa.array([p.read.sha256 for p in items], pa.string()),
            S.DROP_ID: pa.array([drop_id] * len(items), pa.string()),
            S.SOURCE_URI: pa.array([p.uri for p in items], pa.string()),
            S.FILE_NAME: pa.array([p.file.relpath for p in items], pa.string()),
            S.SIZE_BYTES: pa.array([p.read.size for p in items], pa.int64()),
            S.INGESTED_AT: pa.array([now] * len(items), pa.timestamp("us", tz="UTC")),
            S.VIDEO_STORAGE: pa.array([p.storage for p in items], pa.string()),
            S.VIDEO: blob_column(items, contiguous),
        },
        schema=S.INGEST_SCHEMA,
    )


