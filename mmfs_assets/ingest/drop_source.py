"""Where drops come from: a local folder or an ``s3://`` prefix, behind one interface.

:func:`drop_source` picks the kind from ``MMFS_DROP_DIR``. Both kinds answer the same questions, so the
sensor, the ``videos`` asset, ``mmfs materialize`` and ``mmfs status`` share one rule per question:

- ``refusal(name)``: why a drop cannot be ingested (unsafe name; for folders also a symlink or not a folder;
  for buckets no object under it), or None;
- ``scan(registered, quiet, state)``: the unregistered drops that are ready, still being written (and why), refused;
- ``readiness(name, quiet, now, seen)``: whether one drop is ready, and why not (the one rule,
  :func:`mmfs_assets.ingest.drops.judge_readiness`);
- ``refused()``: every refused drop name with its reason;
- ``open(name)``: one drop, whose ``list_files()``, ``reader()`` (``read(file, ...)``) and ``file_uri(file)``
  the ingest uses (:func:`mmfs_assets.ingest.ingest_drop.ingest_drop`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from mmfs_assets.ingest.drops import (
    DropFile,
    DropRefusedError,
    Readiness,
    Scan,
    ScanState,
    SkippedFile,
    list_drop_files,
    readiness,
    refusal,
)
from mmfs_assets.ingest.object_drops import ObjectDrops
from mmfs_assets.ingest.s3_client import is_s3_uri
from mmfs_assets.ingest.safe_open import DropReader, ReadResult


class DropReadable(Protocol):
    def read(self, f: DropFile, *, keep_bytes: bool, on_bytes=None, alloc=None,
             keep_max: int | None = None) -> ReadResult: ...


class Drop(Protocol):
    """One drop, as the ingest reads it."""

    name: str
    uri: str

    def list_files(self) -> tuple[list[DropFile], list[SkippedFile]]: ...

    def reader(self): ...  # a context manager giving a DropReadable

    def file_uri(self, f: DropFile) -> str: ...


class LocalDrop:
    """A drop folder: files listed without following links out of it, read by descriptor (:mod:`.safe_open`)."""

    def __init__(self, path: Path, name: str | None = None):
        self.path = Path(path)
        self.name = name or self.path.name
        if self.path.is_symlink() or not self.path.is_dir():
            raise DropRefusedError(f"drop folder {self.path} is not a real folder (a symlink, missing or a file)")
        self.root = self.path.resolve()
        self.uri = self.root.as_uri()

    def list_files(self) -> tuple[list[DropFile], list[SkippedFile]]:
        return list_drop_files(self.path)

    @contextmanager
    def reader(self) -> Iterator[_LocalReader]:
        with DropReader(self.path) as r:
            yield _LocalReader(r)

    def file_uri(self, f: DropFile) -> str:
        return self.root.joinpath(*f.parts).as_uri()


class _LocalReader:
    def __init__(self, reader: DropReader):
        self._reader = reader

    def read(self, f: DropFile, **kw) -> ReadResult:
        return self._reader.read(f.parts, **kw)


class LocalDrops:
    """The subfolders of a local drop folder."""

    def __init__(self, root: str | Path):
        self.root = str(root)
        self.path = Path(root)

    def candidates(self, registered: set[str]) -> Iterator[tuple[str, str | None]]:
        """(name, why it is refused or None) for every unregistered candidate drop folder."""
        if not self.path.is_dir():
            return
        for d in sorted(self.path.iterdir(), key=lambda p: p.name):
            name = d.name
            if name.startswith((".", "_")) or name in registered:
                continue
            if not d.is_dir() and not d.is_symlink():
                continue  # a stray file next to the drops
            yield name, refusal(self.path, name)

    def refusal(self, name: str) -> str | None:
        return refusal(self.path, name)

    def refused(self) -> dict[str, str]:
        return {n: r for n, r in self.candidates(set()) if r}

    def readiness(self, name: str, quiet_seconds: float, now: float | None = None, seen: list | None = None,
                  *, use_marker: bool = True) -> Readiness:
        """Whether drop ``name`` is ready (see :func:`mmfs_assets.ingest.drops.judge_readiness`), and why not."""
        return readiness(self.path / name, quiet_seconds, now, seen, use_marker=use_marker)

    def scan(self, registered: set[str], quiet_seconds: float, state: ScanState,
             now: float | None = None) -> tuple[Scan, ScanState]:
        scan = Scan(full=True)
        now = time.time() if now is None else now
        seen: dict[str, list] = {}
        for name, reason in self.candidates(registered):
            scan.listed += 1
            if reason:
                scan.refused[name] = reason
                continue
            r = self.readiness(name, quiet_seconds, now, state.seen.get(name))
            if r.ready:
                scan.ready.append(name)
            else:
                scan.waiting.append(name)
                scan.why[name] = r
                if r.seen:
                    seen[name] = r.seen
        return scan, ScanState(state.after, state.full_at, seen)

    def open(self, name: str) -> LocalDrop:
        if reason := self.refusal(name):
            raise DropRefusedError(reason)
        return LocalDrop(self.path / name, name)


DropSource = LocalDrops | ObjectDrops


def drop_source(root: str | Path, options: dict[str, str] | None = None) -> DropSource:
    """The drops under ``root``: an ``s3://`` prefix (read with the Lance storage ``options``) or a folder."""
    return ObjectDrops(str(root), options) if is_s3_uri(str(root)) else LocalDrops(root)
