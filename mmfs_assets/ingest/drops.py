"""Drops: subfolders of the drop directory, when they are ready, and which of their files are ingested.

A drop name becomes a Dagster partition key only if it matches :data:`SAFE_DROP_NAME`: ASCII letters,
digits, ``.``, ``_`` and ``-``, starting with a letter or digit, at most 128 characters. Other names are
refused with a reason (they would be awkward in URLs, shells and filters). :func:`resolve_drop` is the one
rule the sensor, the CLI and the ingest asset share: a drop is a real folder (not a symlink) directly
under the drop directory, with a safe name.

Inside a drop every regular file is ingested (recursively) except hidden files (``.name``) and markers
(``_name``, e.g. ``_READY``). A symlink counts only when its target stays inside the drop folder; the
listing records the target's real path (``parts``), and the ingest opens exactly that path, component by
component, without following any link (:mod:`mmfs_assets.ingest.safe_open`). Re-pointing a link after the
listing therefore cannot make the ingest read a file outside the drop. Anything the listing cannot use (a
link leaving the drop, a link loop, an unreadable folder, a FIFO) becomes a :class:`SkippedFile` with a
reason; it never fails the drop.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

SAFE_DROP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
READY_MARKER = "_READY"


class DropRefusedError(ValueError):
    """A drop name or folder that must not be ingested (unsafe name, symlink, not a folder, missing)."""


def unsafe_reason(name: str) -> str | None:
    """Why ``name`` cannot be a partition key, or None if it can."""
    if SAFE_DROP_NAME.match(name) and ".." not in name:
        return None
    return (
        f"drop name {name!r} is not a safe partition key: use 1-128 ASCII letters, digits, '.', '_' "
        "or '-', starting with a letter or digit, without '..'"
    )


def refusal(root: Path, name: str) -> str | None:
    """Why ``root/name`` is not an ingestible drop, or None if it is (the shared drop-resolution rule)."""
    if reason := unsafe_reason(name):
        return reason
    path = Path(root) / name
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return f"no drop folder {path} (MMFS_DROP_DIR={root})"
    except OSError as e:
        return f"drop folder {path} cannot be inspected: {e.strerror or e}"
    if stat.S_ISLNK(st.st_mode):
        return f"drop {name!r} is a symlink: drops must be real folders under {root}"
    if not stat.S_ISDIR(st.st_mode):
        return f"drop {name!r} is not a folder"
    return None


def resolve_drop(root: Path | str, name: str) -> Path:
    """The folder of drop ``name`` under ``root``, or :class:`DropRefusedError` saying why not."""
    if reason := refusal(Path(root), name):
        raise DropRefusedError(reason)
    return Path(root) / name


def display_name(relpath: str) -> str:
    """``relpath`` as valid UTF-8 text: undecodable bytes of a file name show as ``\\xNN``."""
    return relpath.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


@dataclass(frozen=True)
class DropFile:
    path: Path  # the path inside the drop as listed (may be a symlink that stays inside)
    relpath: str  # relative to the drop folder, '/'-separated, valid UTF-8 (see display_name)
    size: int  # as listed; the ingest re-checks it on the opened descriptor
    parts: tuple[str, ...] = ()  # the real file's path components under the drop (no links), opened by the ingest
    is_link: bool = False
    version: str = ""  # what the listing saw of an object in a bucket (its ETag); reads are pinned to it


@dataclass
class ScanState:
    """The drop sensor's cursor: for a bucket (:mod:`.object_drops`) the last settled drop name and when every
    name was last listed (folders need none: listing a folder's subfolders is one cheap call); for both, the
    listing signature of each waiting drop with future modification times and when a tick first saw it
    (``seen``: such a drop's quiet period runs from then, see :func:`judge_readiness`)."""

    after: str | None = None
    full_at: float = 0.0
    seen: dict[str, list] = field(default_factory=dict)  # drop -> [listing signature, first seen (epoch s)]

    def record(self) -> dict:
        out: dict = {"after": self.after, "full_at": self.full_at}
        if self.seen:
            out["seen"] = self.seen
        return out

    @classmethod
    def of(cls, raw: dict | None) -> ScanState:
        raw = raw or {}
        seen = raw.get("seen") if isinstance(raw.get("seen"), dict) else {}
        return cls(raw.get("after"), float(raw.get("full_at") or 0.0), dict(seen or {}))


@dataclass
class Scan:
    """One sensor tick's look at the drops that are not registered yet."""

    ready: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)
    listed: int = 0  # drop names the tick listed
    full: bool = False  # whether this tick listed every name
    why: dict[str, Readiness] = field(default_factory=dict)  # waiting drop -> why it waits


#: A modification time this far ahead of the clock that judges it (this machine's, or a bucket's server) is
#: not trusted: clock skew, or ``cp -p`` from a device with a wrong date. Within it, a skewed file server
#: delays readiness by at most this long.
FUTURE_TOLERANCE_S = 60.0
NAMES_SHOWN = 5


@dataclass(frozen=True)
class Entry:
    """What readiness looks at for one listed thing: its path in the drop, size and modification time."""

    relpath: str
    size: int
    mtime: float
    tag: str = ""  # anything else that changes with the content (an object's ETag)


@dataclass
class Readiness:
    """Whether a drop is ready to ingest and, when not, why (for the sensor's skip reason and ``mmfs status``)."""

    ready: bool
    why: str = ""
    kind: str = ""  # "" (ready), "writing", "future" or "empty"
    seen: list | None = None  # [signature, first seen]: for the sensor's cursor (future modification times)


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def _age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def listing_signature(entries: list[Entry]) -> str:
    """A digest of what a listing saw (names, sizes, modification times, tags): equal while nothing changes."""
    import hashlib

    h = hashlib.sha256()
    for e in sorted(entries, key=lambda e: e.relpath):
        h.update(f"{e.relpath}\0{e.size}\0{e.mtime!r}\0{e.tag}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:32]


def names_text(names: list[str], limit: int = NAMES_SHOWN) -> str:
    """``'a', 'b' and 3 more``: a few names of a list, shown as text (odd bytes as ``\\xNN``)."""
    shown = ", ".join(repr(display_name(n)) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def judge_readiness(entries: list[Entry], *, marker: bool, quiet_seconds: float, now: float,
                    seen: list | None = None, what: str = "the drop", marker_counts: bool = True) -> Readiness:
    """The one readiness rule of folders and buckets: ready with a ``_READY`` marker (``marker``), or when
    nothing listed changed for ``quiet_seconds``, judged against ``now`` (a bucket's server clock).

    A modification time more than :data:`FUTURE_TOLERANCE_S` ahead of ``now`` is not trusted: waiting
    for it would wait until that date. Such a drop counts as changed whenever its listing signature changes,
    so it is ready once a tick has seen the same listing for ``quiet_seconds``: ``seen`` is the
    ``[signature, first seen]`` a previous tick returned (the sensor keeps it in its cursor); without it
    (a first look, ``mmfs status``) the drop waits and the reason names the files. ``marker_counts=False``:
    a ``_READY`` marker would not change anything (a drop already ingested), the reason does not offer it."""
    or_marker = f", or with a {READY_MARKER} file" if marker_counts else ""
    if marker:
        return Readiness(True)
    if not entries:
        return Readiness(False, f"{what} is empty (no files yet)", "empty")
    future = sorted((e for e in entries if e.mtime > now + FUTURE_TOLERANCE_S), key=lambda e: (-e.mtime, e.relpath))
    trusted = [e.mtime for e in entries if e.mtime <= now + FUTURE_TOLERANCE_S]
    newest = max(trusted) if trusted else None
    if not future:
        assert newest is not None
        if now - newest >= quiet_seconds:
            return Readiness(True)
        return Readiness(False, f"{what} changed {_age(now - newest)} ago: ready once nothing changes for "
                                f"{quiet_seconds:g} s{or_marker}", "writing")
    sig = listing_signature(entries)
    since = float(seen[1]) if seen and len(seen) == 2 and seen[0] == sig else now
    changed = max(since, newest) if newest is not None else since
    if now - changed >= quiet_seconds:
        return Readiness(True, seen=[sig, since])
    n = len(future)
    files = "file has a modification time" if n == 1 else "files have modification times"
    so_far = f", unchanged for {_age(now - changed)} so far" if seen and since < now else ""
    why = (f"{n} {files} in the future (up to {_when(future[0].mtime)}): "
           f"{names_text([e.relpath for e in future])} (clock skew, or copied with `cp -p` from a device with "
           f"a wrong date), so {what} is ready once its listing stays unchanged for {quiet_seconds:g} s"
           f"{so_far}{or_marker}")
    return Readiness(False, why, "future", [sig, since])


@dataclass(frozen=True)
class SkippedFile:
    relpath: str
    reason: str


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


def _real_target(p: Path, root: Path) -> tuple[Path | None, str | None]:
    """(resolved target, None) for a link whose target stays inside ``root``, else (None, reason)."""
    try:
        target = Path(os.path.realpath(p, strict=True))
    except FileNotFoundError:
        target = Path(os.path.realpath(p))
        if not _inside(target, root):
            return None, "symlink leaves the drop folder"
        return None, "dangling symlink"
    except (OSError, RuntimeError) as e:
        if getattr(e, "errno", None) == errno.ELOOP or "loop" in str(e).lower():
            return None, "symlink loop"
        return None, f"symlink cannot be resolved: {e}"
    if not _inside(target, root):
        return None, "symlink leaves the drop folder"
    return target, None


def list_drop_files(drop: Path) -> tuple[list[DropFile], list[SkippedFile]]:
    """Files of a drop to ingest, sorted by relative path, and the files skipped with reasons."""
    root = drop.resolve()
    files: list[DropFile] = []
    skipped: list[SkippedFile] = []

    def walk_error(e: OSError) -> None:  # an unreadable folder is reported, not silently left out
        rel = Path(e.filename).relative_to(drop).as_posix() if e.filename else "?"
        skipped.append(SkippedFile(display_name(rel), f"folder cannot be read: {e.strerror or e}"))

    for dirpath, dirnames, filenames in os.walk(drop, followlinks=False, onerror=walk_error):
        here = Path(dirpath)
        # symlinked directories are listed in dirnames but not walked: check them explicitly
        for d in list(dirnames):
            p = here / d
            if d.startswith((".", "_")):
                dirnames.remove(d)
            elif p.is_symlink():
                dirnames.remove(d)
                rel = display_name(p.relative_to(drop).as_posix())
                target, reason = _real_target(p, root)
                if target is not None:
                    reason = "symlinked directory (its target is ingested directly)"
                skipped.append(SkippedFile(rel, reason or "symlink cannot be resolved"))
        for name in filenames:
            if name.startswith((".", "_")):
                continue
            p = here / name
            rel = display_name(p.relative_to(drop).as_posix())
            try:
                st = os.lstat(p)
            except OSError as e:
                skipped.append(SkippedFile(rel, f"cannot be inspected: {e.strerror or e}"))
                continue
            real, is_link = p, stat.S_ISLNK(st.st_mode)
            if is_link:
                target, reason = _real_target(p, root)
                if target is None:
                    skipped.append(SkippedFile(rel, reason or "symlink cannot be resolved"))
                    continue
                real = target
                try:
                    st = os.stat(target)
                except OSError as e:
                    skipped.append(SkippedFile(rel, f"cannot be inspected: {e.strerror or e}"))
                    continue
            if not stat.S_ISREG(st.st_mode):
                what = "symlink to something that is not a regular file" if is_link else "not a regular file"
                skipped.append(SkippedFile(rel, what))
                continue
            parts = real.resolve().relative_to(root).parts if is_link else p.relative_to(drop).parts
            files.append(DropFile(p, rel, st.st_size, tuple(parts), is_link))
    files.sort(key=lambda f: f.relpath)
    skipped.sort(key=lambda s: s.relpath)
    return files, skipped


def drop_entries(drop: Path) -> list[Entry]:
    """The drop folder, every folder and every file in it (markers and hidden ones too: any change counts),
    with their modification times (symlinks not followed)."""
    out = [Entry("./", 0, drop.lstat().st_mtime)]  # the folder itself: it changes when an entry is added
    for dirpath, _, filenames in os.walk(drop, followlinks=False):
        rel = os.path.relpath(dirpath, drop)
        prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
        if prefix:
            try:
                out.append(Entry(prefix, 0, os.lstat(dirpath).st_mtime))
            except FileNotFoundError:
                continue
        for name in filenames:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except FileNotFoundError:  # removed while we looked
                continue
            out.append(Entry(display_name(prefix + name), st.st_size, st.st_mtime))
    return out


def last_change(drop: Path) -> float:
    """Newest modification time of the drop folder or anything in it (symlinks not followed)."""
    return max(e.mtime for e in drop_entries(drop))


def readiness(drop: Path, quiet_seconds: float, now: float | None = None, seen: list | None = None,
              *, use_marker: bool = True) -> Readiness:
    """Whether a drop folder is ready (a ``_READY`` marker, or quiet; see :func:`judge_readiness`), and why not."""
    now = time.time() if now is None else now
    marker = use_marker and (drop / READY_MARKER).exists()
    entries = [] if marker else drop_entries(drop)
    return judge_readiness(entries, marker=marker, quiet_seconds=quiet_seconds, now=now, seen=seen,
                           marker_counts=use_marker)


def is_ready(drop: Path, quiet_seconds: float, now: float | None = None) -> bool:
    """A drop is ready when it holds a ``_READY`` marker, or nothing in it changed for ``quiet_seconds``
    (a first look: a drop with modification times in the future waits, see :func:`judge_readiness`)."""
    return readiness(drop, quiet_seconds, now).ready
