"""Reading a drop's files exactly once, through one descriptor, without following any link.

The listing (:func:`mmfs_assets.ingest.drops.list_drop_files`) says which files to take; between the
listing and the read anything in the drop may change (a link re-pointed at ``/etc/passwd``, a folder
swapped for a link, a file rewritten). So the ingest never opens a path by name: it opens the drop folder
once (``O_DIRECTORY | O_NOFOLLOW``) and then each path component relative to the previous descriptor with
``O_NOFOLLOW`` (``openat``), checks with ``fstat`` that the result is a regular file, and hashes and stores
the very bytes it reads through that descriptor. The content id is therefore always the SHA-256 of the
stored blob, and nothing outside the drop can be read.

A file that changes size or modification time while it is read is refused (it is still being written).
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CHUNK = 8 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK  # NONBLOCK: a FIFO must not hang us


class UnsafeFileError(OSError):
    """The file cannot be read safely: a link on the way, not a regular file, changed while read."""


@dataclass
class ReadResult:
    sha256: str
    size: int
    data: np.ndarray | None  # the bytes read (inline storage), or None when only hashed (pointer storage)


class DropReader:
    """Opens files of one drop by their path components under it, never following a link."""

    def __init__(self, drop: Path):
        self.drop = Path(drop)
        self.fd = os.open(self.drop, _DIR_FLAGS)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> DropReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self, parts: tuple[str, ...]) -> int:
        """A descriptor of the regular file ``drop/parts...``; no component may be a link."""
        if not parts or any(p in ("", ".", "..") or "/" in p for p in parts):
            raise UnsafeFileError(f"not a path inside the drop: {parts!r}")
        fd = self.fd
        opened: list[int] = []
        try:
            for part in parts[:-1]:
                fd = _open_at(part, _DIR_FLAGS, fd)
                opened.append(fd)
            f = _open_at(parts[-1], _FILE_FLAGS, fd)
        finally:
            for d in opened:
                os.close(d)
        st = os.fstat(f)
        if not stat.S_ISREG(st.st_mode):
            os.close(f)
            raise UnsafeFileError("not a regular file when opened")
        os.set_blocking(f, True)
        return f

    def read(self, parts: tuple[str, ...], *, keep_bytes: bool, on_bytes=None, alloc=None,
             keep_max: int | None = None) -> ReadResult:
        """Hash (and, with ``keep_bytes``, keep) the whole file read through one descriptor.

        ``alloc(size)`` gives the uint8 array the bytes are read into (default: a new one), so a caller
        can read a chunk of files into one buffer without copying them again. A file larger than
        ``keep_max`` *when opened* (it may have grown since it was listed) is only hashed.
        """
        fd = self.open(parts)
        try:
            before = os.fstat(fd)
            size = before.st_size
            h = hashlib.sha256()
            keep = keep_bytes and (keep_max is None or size <= keep_max)
            data = ((alloc or _new)(size)) if keep else None
            got = _read_all(fd, h, data, size, on_bytes)
            after = os.fstat(fd)
            if got != size or after.st_size != size or after.st_mtime_ns != before.st_mtime_ns:
                raise UnsafeFileError(
                    f"changed while it was read ({size} bytes when opened, {got} read, {after.st_size} now)"
                )
            return ReadResult(h.hexdigest(), size, data)
        finally:
            os.close(fd)


def _new(size: int) -> np.ndarray:
    return np.empty(size, dtype=np.uint8)


def _open_at(name: str, flags: int, dir_fd: int) -> int:
    try:
        return os.open(name, flags, dir_fd=dir_fd)
    except OSError as e:
        if e.errno == errno.ELOOP:  # a link where O_NOFOLLOW forbids one
            raise UnsafeFileError(f"a symlink appeared at {name!r} after the drop was listed") from e
        if e.errno == errno.ENOTDIR:  # a folder replaced by a link to one, or by a file
            raise UnsafeFileError(f"{name!r} is no longer a real folder (replaced after the drop was listed)") from e
        raise


def _read_all(fd: int, h, data: np.ndarray | None, size: int, on_bytes) -> int:
    """Read to EOF into ``data`` (when given) and ``h``; returns the bytes read (stops past ``size``)."""
    got = 0
    if data is not None:
        view = memoryview(data)  # type: ignore[arg-type]  # numpy arrays are buffers
        while got < size:
            n = os.readv(fd, [view[got : min(size, got + CHUNK)]])
            if not n:
                break
            h.update(view[got : got + n])
            got += n
            if on_bytes:
                on_bytes(n)
        extra = os.read(fd, 1)  # grew since it was opened
        return got + len(extra)
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    while n := os.readv(fd, [buf]):
        h.update(view[:n])
        got += n
        if on_bytes:
            on_bytes(n)
    return got
