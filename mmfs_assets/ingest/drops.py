"""Drops: subfolders of the drop directory, when they are ready, and which of their files are ingested.

A drop name becomes a Dagster partition key only if it matches :data:`SAFE_DROP_NAME`: ASCII letters,
digits, ``.``, ``_`` and ``-``, starting with a letter or digit, at most 128 characters. Other names are
refused with a reason (they would be awkward in URLs, shells and filters).

Inside a drop every regular file is ingested (recursively) except hidden files (``.name``) and markers
(``_name``, e.g. ``_READY``). A symlink is followed only when its target stays inside the drop folder;
links that leave the drop are skipped, so a drop cannot pull in files from elsewhere on the machine.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

SAFE_DROP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
READY_MARKER = "_READY"


def unsafe_reason(name: str) -> str | None:
    """Why ``name`` cannot be a partition key, or None if it can."""
    if SAFE_DROP_NAME.match(name) and ".." not in name:
        return None
    return (
        f"drop name {name!r} is not a safe partition key: use 1-128 ASCII letters, digits, '.', '_' "
        "or '-', starting with a letter or digit, without '..'"
    )


@dataclass(frozen=True)
class DropFile:
    path: Path  # the path inside the drop (may be a symlink that stays inside)
    relpath: str  # relative to the drop folder, '/'-separated
    size: int


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


def list_drop_files(drop: Path) -> tuple[list[DropFile], list[SkippedFile]]:
    """Files of a drop to ingest, sorted by relative path, and the files skipped with reasons."""
    root = drop.resolve()
    files: list[DropFile] = []
    skipped: list[SkippedFile] = []
    for dirpath, dirnames, filenames in os.walk(drop, followlinks=False):
        here = Path(dirpath)
        # symlinked directories are listed in dirnames but not walked: check them explicitly
        for d in list(dirnames):
            p = here / d
            if d.startswith((".", "_")):
                dirnames.remove(d)
            elif p.is_symlink():
                dirnames.remove(d)
                rel = p.relative_to(drop).as_posix()
                if _inside(p.resolve(), root):
                    skipped.append(SkippedFile(rel, "symlinked directory (its target is ingested directly)"))
                else:
                    skipped.append(SkippedFile(rel, "symlink leaves the drop folder"))
        for name in filenames:
            p = here / name
            rel = p.relative_to(drop).as_posix()
            if name.startswith((".", "_")):
                continue
            if p.is_symlink():
                target = p.resolve()
                if not _inside(target, root):
                    skipped.append(SkippedFile(rel, "symlink leaves the drop folder"))
                    continue
                if not target.is_file():
                    skipped.append(SkippedFile(rel, "symlink to something that is not a regular file"))
                    continue
            elif not p.is_file():
                skipped.append(SkippedFile(rel, "not a regular file"))
                continue
            files.append(DropFile(p, rel, p.stat().st_size))
    files.sort(key=lambda f: f.relpath)
    return files, skipped


def last_change(drop: Path) -> float:
    """Newest modification time of the drop folder or anything in it (symlinks not followed)."""
    newest = drop.lstat().st_mtime
    for dirpath, _, filenames in os.walk(drop, followlinks=False):
        newest = max(newest, os.lstat(dirpath).st_mtime)
        for name in filenames:
            try:
                newest = max(newest, os.lstat(os.path.join(dirpath, name)).st_mtime)
            except FileNotFoundError:  # removed while we looked
                continue
    return newest


def is_ready(drop: Path, quiet_seconds: float, now: float | None = None) -> bool:
    """A drop is ready when it holds a ``_READY`` marker, or nothing in it changed for ``quiet_seconds``."""
    if (drop / READY_MARKER).exists():
        return True
    now = time.time() if now is None else now
    return now - last_change(drop) >= quiet_seconds
