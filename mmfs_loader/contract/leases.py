"""Version leases: a running fill or reader keeps the table version it reads from out of maintenance's reach.

A fill plans from one table version and its decode workers open that version (blobs by stable row id).
``mmfs maintain`` removes versions older than the retention, so on a table whose latest version is older
than a week a fill's own version could vanish under it: a worker started after that (one replaced after
a crash) could not open the table. A lease is a Lance tag on the version, named
``mmfs-lease-<expiry>-<label>-<id>``; Lance's cleanup never removes a tagged version, and every process
that can read the table sees the leases, whatever Dagster instance (or none: ``--ephemeral``) runs the
fill. The holder renews it in the background (a new tag with a later expiry, then the old one removed);
a holder that dies stops renewing and its lease expires after ``ttl``, after which maintenance removes
it. Maintenance and rollback also read the active leases as "a fill is running" (see :func:`active`).

A ``FeatureDataset`` holds a reader lease (label ``reader``) on its pinned version while it lives, so a
training job keeps its data when its snapshot is deleted (:func:`hold`). Reader leases keep versions
only: they do not stop compaction or rollback, which fill leases do (:attr:`Lease.fill`).

Lease tags are hidden from snapshot listings (``known_tags`` leaves them out) and users cannot create
tags with the prefix.
"""

from __future__ import annotations

import logging
import re
import secrets
import threading
import time
import weakref
from dataclasses import dataclass

from mmfs_loader.contract.table import LEASE_PREFIX, TableRef, known_tags

log = logging.getLogger(__name__)

TTL_S = 600.0  # a dead holder's lease lasts at most this long (a killed fill blocks rollback that long)
READER = "reader"  # the label of a reader's lease
_NAME = re.compile(rf"^{re.escape(LEASE_PREFIX)}(\d+)-([A-Za-z0-9_]*)-([0-9a-f]+)$")


@dataclass(frozen=True)
class Lease:
    name: str
    version: int
    expires: float  # epoch seconds
    label: str  # what holds it, e.g. "depth" (a feature name)

    @property
    def fill(self) -> bool:
        """A fill's lease (not a reader's): a writer is running."""
        return self.label != READER

    @property
    def expired(self) -> bool:
        return self.expires <= time.time()

    def describe(self) -> str:
        left = max(0, int(self.expires - time.time()))
        who = "a reader (FeatureDataset)" if not self.fill else (self.label or "a fill")
        return (f"{who} (lease on version {self.version}, renewed every {int(TTL_S / 4)} s while it runs: if it was "
                f"killed, the lease expires in {left} s)")


def parse(name: str, version: int) -> Lease | None:
    m = _NAME.match(name)
    return Lease(name, version, float(m.group(1)), m.group(2)) if m else None


def leases(table: TableRef) -> list[Lease]:
    """Every lease on the table, expired ones included."""
    out = []
    for name, v in known_tags(table.uri, table.options, include_leases=True).items():
        lease = parse(name, v)
        if lease is not None:
            out.append(lease)
    return out


def active(table: TableRef) -> list[Lease]:
    """Leases whose holder is (as far as anyone can tell) still running."""
    return [lease for lease in leases(table) if not lease.expired]


def running_fills(table: TableRef) -> list[Lease]:
    """The active leases of fills (writers), not of readers."""
    return [lease for lease in active(table) if lease.fill]


def remove_expired(table: TableRef) -> int:
    """Delete the leases of holders that stopped renewing them; the number removed."""
    return _delete(table, [lease for lease in leases(table) if lease.expired])


def _delete(table: TableRef, gone: list[Lease]) -> int:
    if not gone:
        return 0
    tags = table.dataset().tags
    n = 0
    for lease in gone:
        try:
            tags.delete(lease.name)
            n += 1
        except Exception:  # noqa: BLE001 - removed by its holder or another maintainer meanwhile
            pass
    return n


def _label(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", text)[:40]


class VersionLease:
    """Hold a lease on ``version`` while the ``with`` block runs (renewed every ``ttl / 4``)."""

    def __init__(self, table: TableRef, version: int, label: str, ttl: float = TTL_S) -> None:
        self.table = table
        self.version = int(version)
        self.label = _label(label)
        self.ttl = ttl
        self.name: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _take(self) -> str:
        name = f"{LEASE_PREFIX}{int(time.time() + self.ttl)}-{self.label}-{secrets.token_hex(4)}"
        self.table.dataset().tags.create(name, self.version)
        return name

    def renew(self) -> None:
        """A new lease with a later expiry, then the old one removed (never a moment without one)."""
        with self._lock:
            new = self._take()
            old, self.name = self.name, new
        if old is not None:
            self._drop(old)

    def _drop(self, name: str) -> None:
        try:
            self.table.dataset().tags.delete(name)
        except Exception:  # noqa: BLE001 - it expires by itself; maintenance removes it then
            pass

    def _run(self) -> None:
        while not self._stop.wait(self.ttl / 4):
            try:
                self.renew()
            except Exception:  # noqa: BLE001 - storage unreachable: the next tick tries again
                pass

    def __enter__(self) -> VersionLease:
        self.name = self._take()
        self._thread = threading.Thread(target=self._run, name="mmfs-lease", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            name, self.name = self.name, None
        if name is not None:
            self._drop(name)


def hold(owner: object, table: TableRef, version: int) -> VersionLease | None:
    """A reader's lease on ``version`` for as long as ``owner`` lives (released when it is collected, or
    expiring ten minutes after the process dies). None, with a warning, where the reader may not write tags
    (read-only credentials): maintenance may then remove the version under it."""
    lease = VersionLease(table, version, READER)
    try:
        lease.__enter__()
    except Exception as e:  # noqa: BLE001 - reading must not depend on it
        log.warning("cannot hold a lease on version %d of %s (%s: %s): `mmfs maintain` may remove it while this "
                    "reader runs; pin a snapshot to keep it", version, table.uri, type(e).__name__, str(e)[:200])
        return None
    weakref.finalize(owner, lease.__exit__, None, None, None)
    return lease
