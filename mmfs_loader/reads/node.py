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

Clean-up: each process that uses the directory holds a shared ``flock`` on ``<root>/<key>.users`` while
it lives, taken before it creates or touches the directory. When the process that created its dataset
object finishes with it, it takes that lock exclusively if it can (no other reader left) and removes the
directory, then the lock file. Directories that no process holds and nobody touched for a minute are
swept when a new one is made (what a killed job leaves behind: in ``/dev/shm`` that is memory).

Why the lock file sits beside the directory, not in it (issue 23): with the lock inside, a reader that
opened it just before the last holder removed the directory got its shared lock on a removed file and
went on with no directory, or one made again that the next leaving job removed under it. Here nothing
removes the directory except under the exclusive lock on the file the path names, and a reader that
locked a file since unlinked (it opened it before a remover let go) sees that and takes the new one, so a
reader holding its lock always holds the live directory. ``flock`` locks die with their process: a killed
reader never blocks anyone.
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
USERS = ".users"  # ``<root>/<key>.users``: the lock readers hold (``<key>/.users`` in earlier releases)


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
    @property
    def users_file(self) -> Path:
        """The lock file that readers of the directory hold shared (beside it: see the module docstring)."""
        return self.root / (self.key + USERS)

    def attach(self, *, owner: bool = False) -> NodeDir:
        """Hold a shared lock on the directory for this process's lifetime, creating it if needed.

        The lock is taken first, then the directory made: once held, nobody removes it until this
        process lets go. ``owner``: this process made the dataset object; when the object goes away it
        removes the directory unless another process still holds it."""
        if self._users is not None:
            return self
        self.root.mkdir(parents=True, exist_ok=True)
        fd = _lock_file(self.users_file, fcntl.LOCK_SH)
        assert fd is not None  # a blocking lock is always taken
        try:
            fresh = not self.path.exists()
            self.path.mkdir(exist_ok=True)
            os.utime(self.path)
        except BaseException:
            os.close(fd)
            raise
        self._users = fd
        self._finalizer = weakref.finalize(self, _release, fd, self.users_file, self.path if owner else None)
        if fresh:
            _sweep(self.root, keep=self.key)
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


def _lock_file(lock: Path, op: int) -> int | None:
    """A descriptor holding ``flock(op)`` on the file now at ``lock`` (created if missing), or None when
    ``op`` has ``LOCK_NB`` and the lock is held elsewhere.

    A remover unlinks ``lock`` while it holds it exclusively. A process that opened the file before that
    gets its lock on the unlinked file once the remover lets go, so after each ``flock`` the path must
    still name the locked file; if it does not, the lock is taken again on the file there now."""
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, op)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        if _names(lock, fd):
            return fd
        os.close(fd)


def _names(lock: Path, fd: int) -> bool:
    """Whether the path ``lock`` still names the file open as ``fd`` (its inode stays in use while
    ``fd`` is open, so a new file there cannot have the same number)."""
    try:
        now = os.stat(lock)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)


def _remove_if_unheld(lock: Path, path: Path, *, touched_before: float | None = None) -> None:
    """Remove the directory ``path`` and its lock file ``lock`` if that can be taken exclusively (nobody
    holds the directory). ``touched_before``: keep a directory modified since then (sweeping)."""
    fd = _lock_file(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    if fd is not None:
        try:
            _remove_locked(fd, lock, path, touched_before)
        finally:
            os.close(fd)


def _remove_locked(fd: int, lock: Path, path: Path, touched_before: float | None) -> None:
    """Remove ``path``, then ``lock``, holding ``lock`` exclusively as ``fd`` (the path named its file
    when it was taken). The directory is first renamed away, so whoever reads it without the lock sees all
    of it or none of it, never a cache half deleted; the lock file goes last, so no reader can lock a new
    one while the directory is still there."""
    try:
        if touched_before is not None and path.stat().st_mtime >= touched_before:
            return
    except FileNotFoundError:
        pass
    if path.is_dir() and not _held_by_earlier_release(path):
        try:
            gone = Path(tempfile.mkdtemp(prefix=f".{path.name}.removed-", dir=path.parent))
        except OSError:
            gone = path
        else:
            try:
                os.replace(path, gone)  # over the empty directory just made
            except OSError:
                shutil.rmtree(gone, ignore_errors=True)
                gone = path
        shutil.rmtree(gone, ignore_errors=True)
    lock.unlink(missing_ok=True)  # still the file held as fd: only its exclusive holder unlinks it


def _held_by_earlier_release(path: Path) -> bool:
    """Whether a process of an earlier release, which holds its lock on ``.users`` inside the directory,
    still uses ``path`` (while both run on one node)."""
    try:
        fd = os.open(path / USERS, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _release(fd: int, lock: Path, remove: Path | None) -> None:
    """Drop this process's shared lock; ``remove``: delete the directory if no other process holds it."""
    try:
        if remove is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return
            # Turning a shared lock exclusive is not atomic: another remover may have come in between.
            if _names(lock, fd):
                _remove_locked(fd, lock, remove, None)
    finally:
        os.close(fd)


def _sweep(root: Path, keep: str) -> None:
    """Remove sibling directories that no process holds and nobody touched for a minute, and lock files
    left without their directory (a remover killed between the two)."""
    before = time.time() - STALE_AFTER_S
    try:
        entries = list(root.iterdir())
    except OSError:
        return
    names = set()
    for e in entries:
        try:
            if e.is_dir():
                names.add(e.name)
            elif e.name.endswith(USERS):
                names.add(e.name[: -len(USERS)])
        except OSError:
            continue
    names.discard(keep)
    for name in sorted(names):
        try:
            _remove_if_unheld(root / (name + USERS), root / name, touched_before=before)
        except OSError:
            continue
