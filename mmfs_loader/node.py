"""Files shared by every process of one node that reads one dataset: the selection, epoch orders, the cache.

A training node runs several ranks, each with several DataLoader workers. Before, each of them held
its own copy of the selection (pickled into every worker: 8 bytes per row, 800 MB per worker at 100M
rows), computed each epoch's order itself and filled its own cache. Now the first process that needs
one of these writes it once into a node directory and every other process memory-maps it, so the
page cache holds one copy per node whatever the number of ranks and workers.

Layout: ``<root>/<key>/`` where ``root`` is ``MMFS_LOADER_CACHE_DIR`` (default: a per-user folder
in the system temp directory) and ``key`` a hash of what decides the selection (table URI, version,
filters, guard options). Every file there is a pure function of that key, so a file is written to a
temporary name and renamed into place (a reader never sees half a file, a killed writer leaves only
a temporary file) and a later run on the same node reuses what is there.

Clean-up: each process that uses the directory holds a shared ``flock`` on ``.users`` while it lives.
When the process that created its dataset object finishes with it, it takes the lock exclusively if it
can (no other reader left) and removes the directory. Directories that no process holds and nobody
touched for a minute are swept when a new one is made (what a killed job leaves behind: in ``/dev/shm``
that is memory).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import mmap
import os
import re
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

ENV_ROOT = "MMFS_LOADER_CACHE_DIR"
STALE_AFTER_S = 60  # an unheld directory this old is left over (a new one is held within milliseconds)
SHM = Path("/dev/shm")


def default_root() -> Path:
    """``MMFS_LOADER_CACHE_DIR``, else ``/dev/shm/mmfs-loader-<uid>`` (memory: filling it costs no disk
    writes) when that has 1 GiB free, else ``<tmp>/mmfs-loader-<uid>``."""
    env = os.environ.get(ENV_ROOT)
    if env:
        return Path(env)
    name = f"mmfs-loader-{os.getuid()}"
    try:
        if SHM.is_dir() and os.access(SHM, os.W_OK) and has_room(SHM, 1 << 30):
            return SHM / name
    except OSError:
        pass
    return Path(tempfile.gettempdir()) / name


def key_of(parts: dict[str, Any]) -> str:
    """A short stable hash of JSON-serialisable ``parts``."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


class NodeDir:
    """One dataset's shared directory on this node (see the module docstring)."""

    def __init__(self, root: Path | str, key: str) -> None:
        self.root, self.key = Path(root), key
        self.path = self.root / key
        self._users: int | None = None  # fd holding the shared lock
        self._finalizer: weakref.finalize | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"root": self.root, "key": self.key, "path": self.path, "_users": None, "_finalizer": None}

    # ---- users ---------------------------------------------------------------------------------------
    def attach(self, *, owner: bool = False) -> NodeDir:
        """Create the directory if needed and hold a shared lock on it for this process's lifetime.

        ``owner``: this process made the dataset object; when the object goes away it removes the
        directory unless another process still holds it."""
        if self._users is not None:
            return self
        fresh = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        if fresh:
            _sweep(self.root, keep=self.key)
        fd = os.open(self.path / ".users", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_SH)
        os.utime(self.path)
        self._users = fd
        self._finalizer = weakref.finalize(self, _release, fd, self.path if owner else None)
        return self

    def release(self) -> None:
        """Let go of the directory now (the owner removes it if no other process holds it)."""
        if self._finalizer is not None:
            self._finalizer()
        self._users = None

    # ---- files ---------------------------------------------------------------------------------------
    def file(self, name: str) -> Path:
        return self.path / name

    def load_array(self, name: str) -> np.ndarray | None:
        """The array stored as ``name`` (memory-mapped, read-only), or None if it is not there."""
        p = self.file(name)
        try:
            return map_npy(p)
        except FileNotFoundError:
            return None

    def save_array(self, name: str, arr: np.ndarray) -> np.ndarray:
        """Store ``arr`` as ``name`` (atomically) and return it memory-mapped. Without room on the
        node's disk the array is kept in this process only."""
        self.path.mkdir(parents=True, exist_ok=True)
        if not has_room(self.path, arr.nbytes):
            return arr
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=self.path)
        try:
            with os.fdopen(fd, "wb") as f:
                np.save(f, np.ascontiguousarray(arr))
            os.replace(tmp, self.file(name))
        except OSError:
            Path(tmp).unlink(missing_ok=True)
            return arr
        out = self.load_array(name)
        return arr if out is None else out

    def shared_array(self, name: str, compute) -> np.ndarray:
        """``name`` from the directory, or computed by ``compute()`` once per node (the others wait for
        the first process and map its file)."""
        have = self.load_array(name)
        if have is not None:
            return have
        with self.lock(f"{name}.lock"):
            have = self.load_array(name)
            if have is not None:
                return have
            return self.save_array(name, compute())

    def remove_older(self, prefix: str, keep: set[int]) -> None:
        """Remove ``<prefix><n>.npy`` files whose ``n`` is not in ``keep`` (processes that mapped one keep
        reading it: an unlinked file lives until its last mapping goes)."""
        for f in self.path.glob(f"{prefix}*.npy"):
            try:
                n = int(f.name[len(prefix) : -len(".npy")])
            except ValueError:
                continue
            if n not in keep:
                f.unlink(missing_ok=True)

    @contextmanager
    def lock(self, name: str, *, blocking: bool = True) -> Iterator[bool]:
        """An exclusive ``flock`` on ``name`` in the directory; yields whether it was taken."""
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.file(name), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
                got = True
            except BlockingIOError:
                got = False
            yield got
        finally:
            os.close(fd)  # closing drops the lock


_NPY_HEADER = re.compile(r"^\{'descr': '([<>|=][a-zA-Z]\d*)', 'fortran_order': False, 'shape': \(([\d, ]*)\), \}\s*$")


def npy_header(f) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) of the ``.npy`` file ``f`` (positioned at its start), leaving ``f`` at the data.

    The header is parsed with a regular expression, not numpy's reader: that one calls
    ``ast.literal_eval``, and CPython 3.11 fails ("AST constructor recursion depth mismatch") when two
    threads compile at once, which the loader's read-ahead threads did. Files in another layout (a
    Fortran-ordered array, a structured dtype) go to numpy's reader under a lock."""
    version = np.lib.format.read_magic(f)
    start = f.tell()
    n = int.from_bytes(f.read(2 if version == (1, 0) else 4), "little")
    m = _NPY_HEADER.match(f.read(n).decode("latin1"))
    if m is not None:
        return tuple(int(x) for x in m.group(2).replace(" ", "").split(",") if x), np.dtype(m.group(1))
    with _NPY_LOCK:
        f.seek(start)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(f)
    if fortran:
        raise ValueError(f"{f.name}: a Fortran-ordered array is not one the loader wrote")
    return shape, dtype


_NPY_LOCK = threading.Lock()


def map_npy(path: Path) -> np.ndarray:
    """A read-only array over an ``.npy`` file's pages, mapped with ``MAP_POPULATE`` (one bulk fault-in
    instead of one fault per page on first touch) and as a plain ndarray (no ``np.memmap`` overhead)."""
    with open(path, "rb") as f:
        shape, dtype = npy_header(f)
        offset = f.tell()
        size = os.fstat(f.fileno()).st_size
        if size == 0 or int(np.prod(shape)) == 0:
            return np.zeros(shape, dtype=dtype)
        flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
        mm = mmap.mmap(f.fileno(), size, flags=flags, prot=mmap.PROT_READ)
    return np.frombuffer(mm, dtype=dtype, count=int(np.prod(shape)), offset=offset).reshape(shape)


def has_room(path: Path, nbytes: int) -> bool:
    """Whether the file system of ``path`` has ``nbytes`` free with a margin (10% and 256 MiB kept)."""
    try:
        st = os.statvfs(path)
    except OSError:
        return False
    free = st.f_bavail * st.f_frsize
    total = st.f_blocks * st.f_frsize
    return free - nbytes > max(256 << 20, total // 10)


def _remove_if_unheld(fd: int, path: Path) -> None:
    """Remove ``path`` if the lock on ``fd`` (its ``.users`` file) can be taken exclusively: nobody else
    holds the directory. The fd stays open (the caller closes it)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return
    shutil.rmtree(path, ignore_errors=True)


def _release(fd: int, remove: Path | None) -> None:
    """Drop this process's shared lock; ``remove``: delete the directory if no other process holds it."""
    try:
        if remove is not None:
            _remove_if_unheld(fd, remove)
    finally:
        os.close(fd)


def _sweep(root: Path, keep: str) -> None:
    """Remove sibling directories that no process holds and nobody touched for a minute."""
    now = time.time()
    try:
        entries = list(root.iterdir())
    except OSError:
        return
    for d in entries:
        if d.name == keep or not d.is_dir():
            continue
        try:
            if now - d.stat().st_mtime < STALE_AFTER_S:
                continue
            fd = os.open(d / ".users", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            continue
        try:
            _remove_if_unheld(fd, d)
        finally:
            os.close(fd)
