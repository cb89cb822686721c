"""What the engine's worker processes run: open the table once, then decode, probe or post-process rows.

Each function is a top-level function (pickled by name) that returns a
:class:`~mmfs_assets.engine.row_result.RowResult`; decoded frames go back through shared memory
(:mod:`mmfs_assets.engine.shm`). Workers never import torch. Failures that belong to the row (a decode
error, a missing source file) come back as its ``error``; crashes and hangs are the pool's.

Failures of the storage are not the row's: a read that fails (a network outage to the object store, a
data file of the table gone under a reader) is retried with backoff for ``storage_retry_s`` seconds, the
table reopened at its latest version when its files moved; what still fails comes back as ``deferred``: the fill leaves that row as it was, and the next run retries it. Reads go through
:class:`_Recorded`, which remembers the storage error even when FFmpeg turns it into a decode failure.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import lance

from mmfs_assets.engine.row_result import RowResult
from mmfs_assets.engine.shm import SharedFrames
from mmfs_assets.table.retry import retry_storage, storage_pause
from mmfs_loader.contract import schema as S
from mmfs_loader.contract.table import TableRef, not_found
from mmfs_loader.decode.video import DecodeError, VideoPlan, decode_frames

if TYPE_CHECKING:
    from mmfs_assets.ingest.probe import FrameLimits

STORAGE_RETRY_S = 60.0  # how long a worker keeps retrying a storage failure before deferring the row

_table: lance.LanceDataset | None = None
_ref: TableRef | None = None
_retry_s = STORAGE_RETRY_S


class StorageError(OSError):
    """Reading from the table's storage failed (not the video's fault)."""


def _open(table: TableRef, version: int | None, budget: float) -> lance.LanceDataset:
    """The table at ``version``; at the latest when that version is gone (blobs keep their stable row ids,
    so the rows read the same); storage failures retried for ``budget`` seconds."""
    try:
        return retry_storage(lambda: table.dataset(version), budget_s=budget)
    except Exception as e:
        if version is None or not not_found(e):
            raise
    return retry_storage(lambda: table.dataset(None), budget_s=budget)  # removed by maintenance: read the latest


def open_table(table: TableRef, version: int | None, storage_retry_s: float = STORAGE_RETRY_S) -> None:
    """Worker initializer: the table at the version the fill planned from (blobs do not change)."""
    global _table, _ref, _retry_s
    os.environ.setdefault("LANCE_LOG", "error")
    _ref, _retry_s = table, storage_retry_s
    _table = _open(table, version, storage_retry_s)


class _Recorded(io.RawIOBase):
    """A blob file that remembers the first storage error of a read or seek (PyAV reports it as a decode
    failure of the video; this keeps the real cause)."""

    def __init__(self, f: Any) -> None:
        super().__init__()
        self._f = f
        self.error: BaseException | None = None

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except OSError as e:
            if self.error is None:
                self.error = e
            raise

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        return self._call(self._f.read, n)

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._call(self._f.seek, offset, whence)

    def tell(self) -> int:
        return self._f.tell()


def _with_blob(rowid: int, use: Callable[[Any], RowResult], t0: float) -> RowResult:
    """``use(blob)`` on the row's video, storage failures retried (see the module docstring)."""
    global _table
    assert _table is not None and _ref is not None, "open_table did not run in this worker"
    deadline = time.monotonic() + _retry_s
    attempt = 0
    while True:
        try:
            blob = _table.take_blobs(S.VIDEO, ids=[rowid])[0]
        except Exception as e:  # noqa: BLE001 - classified below
            err: BaseException = e
        else:
            if blob is None:
                return RowResult(time.perf_counter() - t0, error="no video stored for this row")
            rec = _Recorded(blob)
            with blob:
                out = use(rec)
            if rec.error is None:
                out.storage_retries = attempt
                return out
            if isinstance(out.frames, SharedFrames):
                out.frames.discard()
            err = rec.error
        where = str(err)
        # a file of the table: object stores name it by key ("t/videos.lance/data/..."), local ones by path
        ours = f"{_ref.uri.rstrip('/').rsplit('/', 1)[-1]}/" in where
        if not_found(err) and not ours:
            # a pointer row whose source file is gone: the row's error, retrying cannot help
            return RowResult(time.perf_counter() - t0, error=f"video not readable: {type(err).__name__}: {err}")
        if not_found(err):  # a file of the table moved under this worker (compaction): read the latest
            try:
                _table = _open(_ref, None, max(0.0, deadline - time.monotonic()))
            except Exception as e:  # noqa: BLE001
                err = e
        if time.monotonic() + storage_pause(attempt) > deadline:
            return RowResult(time.perf_counter() - t0,
                             deferred=f"storage error after {attempt + 1} tries: {type(err).__name__}: {err}")
        time.sleep(storage_pause(attempt))
        attempt += 1


def decode_row(rowid: int, plan: VideoPlan, times: list[float], short_side: int | None, mode: str) -> RowResult:
    """The row's frames at ``times`` (uint8 ``[K, H, W, 3]`` in shared memory), with times and decode counts."""
    t0 = time.perf_counter()

    def use(blob: Any) -> RowResult:
        try:
            d = decode_frames(blob, plan, times, short_side, mode=mode, threads=1)
        except DecodeError as e:
            return RowResult(time.perf_counter() - t0, error=str(e))
        except Exception as e:  # noqa: BLE001 - unreadable bytes are this row's error
            return RowResult(time.perf_counter() - t0, error=f"cannot decode: {type(e).__name__}: {e}")
        return RowResult(time.perf_counter() - t0, frames=SharedFrames.put(d.frames), timestamps=d.timestamps,
                         frames_decoded=d.frames_decoded)

    return _with_blob(rowid, use, t0)


def probe_row(rowid: int, size_bytes: int, max_corrupt_frames: int, limits: FrameLimits | None = None) -> RowResult:
    """The metadata group's values of a row (``probe_video``; ``limits``: its ``FrameLimits``), or its error."""
    from mmfs_assets.ingest.probe import probe_video

    t0 = time.perf_counter()

    def use(blob: Any) -> RowResult:
        try:
            r = probe_video(blob, size_bytes=size_bytes, max_corrupt_frames=max_corrupt_frames, limits=limits)
        except Exception as e:  # noqa: BLE001
            return RowResult(time.perf_counter() - t0, error=f"cannot read the video: {type(e).__name__}: {e}")
        return RowResult(time.perf_counter() - t0, error=r.error, values=r.values,
                         frames_decoded=r.values.get("num_frames") or 0)

    return _with_blob(rowid, use, t0)


def call(fn, *args: Any) -> Any:
    """Run a feature's post-processing (e.g. depth PNG encoding) in a worker."""
    return fn(*args)
