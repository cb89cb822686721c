"""Drops in object storage: ``MMFS_DROP_DIR=s3://bucket/prefix/``, one drop per ``prefix/<drop>/``.

The rules are the folder rules (:mod:`mmfs_assets.ingest.drops`) carried over to keys: a drop name must be a
safe partition key; every object under the drop is ingested except those with a path component starting
with ``.`` (hidden) or ``_`` (markers such as ``_READY``, staging areas); folder placeholders (keys ending
in ``/``) are not files; a key with an empty, ``.`` or ``..`` component is skipped with a reason. Object
storage has no symlinks, so nothing can lead out of the drop.

Readiness: a ``_READY`` object directly under the drop, or nothing under it modified for the quiet period,
measured against the server's clock (the ``Date`` of the listing response), not this machine's. The rule is
the folders' (:func:`mmfs_assets.ingest.drops.judge_readiness`): a ``LastModified`` ahead of the server's
clock is not trusted, such a drop is ready once its listing stays the same for the quiet period.

Reads are pinned to what was listed: each object is fetched with ``If-Match: <listed ETag>``, so an object
rewritten between the listing and the read is refused (a skip entry, like a local file that changes while it
is read) instead of ingesting bytes that were never listed. Per-object refusals (precondition failed, gone,
access denied) become skip entries; anything else (the endpoint unreachable, bad credentials for the
bucket) fails the step, because a skip would mark the drop done without its videos.

Listing is by delimiter: one entry per drop, so the videos of drops already registered are never listed
again. :meth:`ObjectDrops.scan` also keeps a cursor (the last drop name it settled) and lists only names
after it, with a full listing every :data:`FULL_LIST_INTERVAL_S` to catch names that sort lower.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import numpy as np

from mmfs_assets.ingest.drops import (
    READY_MARKER,
    DropFile,
    DropRefusedError,
    Entry,
    Readiness,
    Scan,
    ScanState,
    SkippedFile,
    judge_readiness,
    unsafe_reason,
)
from mmfs_assets.ingest.s3_client import S3Location, error_text, s3_client
from mmfs_assets.ingest.safe_open import CHUNK, ReadResult, UnsafeFileError

FULL_LIST_INTERVAL_S = 300.0  # a drop whose name sorts below the cursor is found within this long
# per-object refusals: the object changed, went away, or may not be read; the rest of the drop goes on
_SKIP_CODES = {"PreconditionFailed", "NoSuchKey", "404", "412", "AccessDenied", "403", "InvalidObjectState"}


class ObjectReadError(OSError):
    """One object could not be read as listed (changed, removed, forbidden): a skip entry, not a failure."""


def _code(e: BaseException) -> str:
    resp = getattr(e, "response", None)
    return str(resp.get("Error", {}).get("Code", "")) if isinstance(resp, dict) else ""


class ObjectDrops:
    """The drops under an ``s3://`` prefix, read with Lance storage options (see :mod:`.s3_client`)."""

    def __init__(self, root: str, options: dict[str, str] | None = None):
        self.loc = S3Location.parse(root)
        self.root = self.loc.uri
        self._options = dict(options or {})
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = s3_client(self._options)
        return self._client

    def __repr__(self) -> str:  # never the options
        return f"ObjectDrops({self.root!r})"

    # -- names -------------------------------------------------------------------------------------
    def drop_names(self, after: str | None = None) -> list[str]:
        """Names of the ``prefix/<name>/`` under the root, in key order; with ``after`` only those whose
        prefix sorts after ``prefix/<after>/`` (and none of that drop's own keys are listed)."""
        kw: dict[str, Any] = {"Bucket": self.loc.bucket, "Prefix": self.loc.prefix, "Delimiter": "/"}
        if after is not None:
            # every key under 'prefix/after/' sorts before 'prefix/after0' ('0' follows '/')
            kw["StartAfter"] = f"{self.loc.prefix}{after}0"
        names = []
        for page in self.client.get_paginator("list_objects_v2").paginate(**kw):
            for cp in page.get("CommonPrefixes", []):
                names.append(cp["Prefix"][len(self.loc.prefix):-1])
        return names

    def refusal(self, name: str) -> str | None:
        """Why ``name`` is not an ingestible drop, or None (the rule the sensor, CLI and ingest share)."""
        if reason := unsafe_reason(name):
            return reason
        try:
            resp = self.client.list_objects_v2(Bucket=self.loc.bucket, Prefix=self.loc.child(name).prefix, MaxKeys=1)
        except Exception as e:  # noqa: BLE001 - said, not raised: the caller reports it
            return f"drop {self.loc.child(name).uri} cannot be listed ({error_text(e)})"
        if not resp.get("KeyCount"):
            return f"no drop {self.loc.child(name).uri} (no objects under it; MMFS_DROP_DIR={self.root})"
        return None

    def refused(self) -> dict[str, str]:
        """Drop names under the root that will never be ingested, with the reason (for ``mmfs status``)."""
        return {n: r for n in self.drop_names() if not n.startswith((".", "_")) and (r := unsafe_reason(n))}

    # -- readiness ---------------------------------------------------------------------------------
    def _objects(self, name: str) -> Iterator[tuple[dict, float | None]]:
        """(object, server time of the page) for every object under the drop."""
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.loc.bucket, Prefix=self.loc.child(name).prefix)
        for page in pages:
            date = page.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
            now = parsedate_to_datetime(date).timestamp() if date else None
            for obj in page.get("Contents", []):
                yield obj, now

    def has_marker(self, name: str) -> bool:
        """Whether ``<drop>/_READY`` exists."""
        try:
            self.client.head_object(Bucket=self.loc.bucket, Key=f"{self.loc.child(name).prefix}{READY_MARKER}")
            return True
        except Exception as e:
            if _code(e) not in ("404", "NoSuchKey", "NotFound"):
                raise
            return False

    def entries(self, name: str) -> tuple[list[Entry], float | None]:
        """Every object under the drop (markers and hidden ones too) and the server's time of the listing."""
        prefix = self.loc.child(name).prefix
        out, server_now = [], None
        for obj, now in self._objects(name):
            out.append(Entry(obj["Key"][len(prefix):], int(obj.get("Size", 0)), obj["LastModified"].timestamp(),
                             str(obj.get("ETag", ""))))
            server_now = now or server_now
        return out, server_now

    def readiness(self, name: str, quiet_seconds: float, now: float | None = None, seen: list | None = None,
                  *, use_marker: bool = True) -> Readiness:
        """``_READY`` under the drop, or no object under it modified for ``quiet_seconds``, measured on the
        server's clock (``now`` only when the listing carries no ``Date``); the rule and the reasons are the
        folders' (:func:`mmfs_assets.ingest.drops.judge_readiness`), future modification times included."""
        if use_marker and self.has_marker(name):
            return Readiness(True)
        entries, server_now = self.entries(name)  # an empty prefix is not a drop yet
        clock = server_now or (time.time() if now is None else now)
        return judge_readiness(entries, marker=False, quiet_seconds=quiet_seconds, now=clock, seen=seen,
                               marker_counts=use_marker)

    def is_ready(self, name: str, quiet_seconds: float) -> bool:
        """``_READY`` under the drop, or no object under it modified for ``quiet_seconds`` (server clock)."""
        return self.readiness(name, quiet_seconds).ready

    def scan(self, registered: set[str], quiet_seconds: float, state: ScanState,
             now: float | None = None) -> tuple[Scan, ScanState]:
        """Unregistered drops, ready or not or refused, listing only names after the cursor (see module doc)."""
        now = time.time() if now is None else now
        full = state.after is None or now - state.full_at >= FULL_LIST_INTERVAL_S
        names = self.drop_names(None if full else state.after)
        scan = Scan(listed=len(names), full=full)
        # drops an incremental listing did not reach keep what earlier ticks saw of them
        seen = {} if full else {n: v for n, v in state.seen.items() if n not in registered and n not in names}
        for name in names:
            if name.startswith((".", "_")) or name in registered:
                continue
            if reason := unsafe_reason(name):
                scan.refused[name] = reason
                continue
            r = self.readiness(name, quiet_seconds, seen=state.seen.get(name))
            if r.ready:
                scan.ready.append(name)
            else:
                scan.waiting.append(name)
                scan.why[name] = r
                if r.seen:
                    seen[name] = r.seen
        # the cursor moves past the names settled this tick, up to the first drop still being written
        # (hidden and staging prefixes, '.x' and '_x', never move it: new drops may sort below them)
        ordered = sorted((n for n in names if not n.startswith((".", "_"))), key=lambda n: f"{n}/")
        waiting = set(scan.waiting)
        cut = next((i for i, n in enumerate(ordered) if n in waiting), len(ordered))
        new = ScanState(state.after, now if full else state.full_at, seen)
        if cut:
            new.after = ordered[cut - 1]
        elif full:
            new.after = None  # the first drop is still being written: list from the start until it settles
        return scan, new

    # -- one drop ----------------------------------------------------------------------------------
    def open(self, name: str) -> ObjectDrop:
        if reason := self.refusal(name):
            raise DropRefusedError(reason)
        return ObjectDrop(self, name)


def _skip_reason(rel: str) -> str | None:
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return "object key is not a plain path (an empty, '.' or '..' component)"
    return None


class ObjectDrop:
    """One drop in a bucket: its objects listed once, each read once, pinned to the listed ETag."""

    def __init__(self, drops: ObjectDrops, name: str):
        self.drops = drops
        self.name = name
        self.loc = drops.loc.child(name)
        self.uri = self.loc.uri

    def list_files(self) -> tuple[list[DropFile], list[SkippedFile]]:
        files: list[DropFile] = []
        skipped: list[SkippedFile] = []
        for obj, _ in self.drops._objects(self.name):
            rel = obj["Key"][len(self.loc.prefix):]
            if not rel or rel.endswith("/"):
                continue  # a folder placeholder, not a file
            parts = rel.split("/")
            if any(p.startswith((".", "_")) for p in parts if p):
                continue  # hidden files and markers, as in a folder
            if reason := _skip_reason(rel):
                skipped.append(SkippedFile(rel, reason))
                continue
            files.append(DropFile(Path(rel), rel, int(obj["Size"]), tuple(parts), version=str(obj.get("ETag", ""))))
        files.sort(key=lambda f: f.relpath)
        skipped.sort(key=lambda s: s.relpath)
        return files, skipped

    def file_uri(self, f: DropFile) -> str:
        return self.drops.loc.object_uri(self.loc.prefix + "/".join(f.parts))

    @contextmanager
    def reader(self) -> Iterator[ObjectDrop]:
        yield self

    def read(self, f: DropFile, *, keep_bytes: bool, on_bytes=None, alloc=None, keep_max: int | None = None) -> ReadResult:
        """Hash (and with ``keep_bytes`` keep) the object as listed; see :meth:`DropReader.read`."""
        kw: dict[str, Any] = {"Bucket": self.drops.loc.bucket, "Key": self.loc.prefix + "/".join(f.parts)}
        if f.version:
            kw["IfMatch"] = f.version
        try:
            resp = self.drops.client.get_object(**kw)
        except Exception as e:
            code = _code(e)
            if code in ("PreconditionFailed", "412"):
                raise UnsafeFileError("changed after the drop was listed (its ETag moved)") from e
            if code in _SKIP_CODES:
                raise ObjectReadError(error_text(e)) from e
            raise
        size = int(resp["ContentLength"])
        body = resp["Body"]
        h = hashlib.sha256()
        keep = keep_bytes and (keep_max is None or size <= keep_max)
        data = ((alloc or (lambda n: np.empty(n, dtype=np.uint8)))(size)) if keep else None
        got = 0
        try:
            while chunk := body.read(CHUNK):
                n = len(chunk)
                if data is not None and got + n <= size:
                    data[got:got + n] = np.frombuffer(chunk, dtype=np.uint8)
                h.update(chunk)
                got += n
                if on_bytes:
                    on_bytes(n)
        finally:
            body.close()
        if got != size:
            raise UnsafeFileError(f"{got} bytes read of the {size} the server announced")
        return ReadResult(h.hexdigest(), size, data)
