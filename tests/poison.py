"""Decode tasks that break their worker on purpose (imported by name in the engine's spawned workers)."""

from __future__ import annotations

import os
import signal
import time

from mmfs_assets.engine import tasks


def crash() -> None:
    os.kill(os.getpid(), signal.SIGSEGV)


def hang() -> None:
    time.sleep(3600)


def echo(x):
    return x


def decode_or_break(rowid, plan, times, short_side, mode):
    """A real decode, except rows whose video lasts exactly 1.3 s crash the decoder and 1.7 s ones hang."""
    if abs(plan.duration_s - 1.3) < 1e-3:
        crash()
    if abs(plan.duration_s - 1.7) < 1e-3:
        hang()
    return tasks.decode_row(rowid, plan, times, short_side, mode)



def sleep_then_echo(marker: str, seconds: float, x):
    """Say it started (``marker`` file), then take ``seconds``: a task to kill a worker under."""
    with open(marker, "w"):
        pass
    time.sleep(seconds)
    return x


def fail_setup() -> None:
    raise RuntimeError("cannot open the table")


class _Down:
    """A table whose storage is unreachable: row 1.1 s fails at opening the blob, row 1.5 s when FFmpeg reads it."""

    def __init__(self, real, duration: float):
        self.real, self.duration = real, duration

    def take_blobs(self, column, ids):
        if abs(self.duration - 1.1) < 1e-3:
            raise OSError("LanceError(IO): Generic S3 error: error sending request: connection refused")
        return [_FailingRead(b) for b in self.real.take_blobs(column, ids=ids)]


class _FailingRead:
    def __init__(self, blob):
        self.blob, self.n = blob, 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.blob.close()

    def read(self, n=-1):
        self.n += 1
        if self.n >= 1:  # the blob opened, reading its bytes fails (inside FFmpeg's read callback)
            raise OSError("LanceError(IO): Failed to read blob source: connection reset")
        return self.blob.read(n)

    def seek(self, offset, whence=0):
        return self.blob.seek(offset, whence)

    def tell(self):
        return self.blob.tell()


def decode_or_storage_down(rowid, plan, times, short_side, mode):
    """A real decode, except that while the file ``$MMFS_TEST_STORAGE_DOWN`` exists the rows of 1.1 s and
    1.5 s meet an unreachable storage (through the real retry path, with a 1 s budget)."""
    down = os.path.exists(os.environ.get("MMFS_TEST_STORAGE_DOWN", "/nonexistent"))
    if not down or not any(abs(plan.duration_s - d) < 1e-3 for d in (1.1, 1.5)):
        return tasks.decode_row(rowid, plan, times, short_side, mode)
    real, budget = tasks._table, tasks._retry_s
    tasks._table, tasks._retry_s = _Down(real, plan.duration_s), 1.0
    try:
        return tasks.decode_row(rowid, plan, times, short_side, mode)
    finally:
        tasks._table, tasks._retry_s = real, budget


def echo_bytes(data: bytes) -> bytes:
    """A result as big as its task (depth maps in, PNGs out)."""
    return bytes(data)
