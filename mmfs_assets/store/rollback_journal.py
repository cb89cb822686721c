"""The rollback journal: flagging the undone partitions survives a rollback killed after its restore.

The plan is recorded (a small JSON file in ``$DAGSTER_HOME/mmfs-rollbacks/``) before the restore and removed
once its partitions are flagged; the next ``mmfs rollback`` finishes (:func:`finish_pending`) every recorded
plan whose restore committed, found in the table's history by its ``mmfs.rollback_id``.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from mmfs_assets.store.lineage import Commit
from mmfs_assets.store.rollback import (
    ROLLBACK_ID,
    RollbackBusyError,
    RollbackPlan,
    Undone,
    account_for_races,
    commits,
)
from mmfs_loader.contract.table import TableRef

JOURNAL_DIR = "mmfs-rollbacks"  # under $DAGSTER_HOME
_SCAN = 32  # versions read per step when looking for a rollback's restore commit


def _later_commits(table: TableRef, after: int) -> Iterator[Commit]:
    """The commits after version ``after``, oldest first, read a few at a time."""
    latest = table.dataset().version
    for start in range(after + 1, latest + 1, _SCAN):
        yield from commits(table, list(range(start, min(start + _SCAN, latest + 1))))


def find_restore(table: TableRef, p: RollbackPlan) -> int | None:
    """The version of ``p``'s restore commit, None when it never committed."""
    return next((c.version for c in _later_commits(table, p.latest) if c.properties.get(ROLLBACK_ID) == p.id), None)


def rewritten_since(table: TableRef, version: int) -> set[tuple[str, str]]:
    """(asset, partition) of the runs that committed after ``version`` (their partitions were re-run)."""
    out = set()
    for c in _later_commits(table, version):
        asset, part = c.properties.get("mmfs.asset"), c.properties.get("mmfs.partition")
        if asset and part:
            out.add((asset, part))
    return out


class Journal:
    """Recorded rollback plans (one JSON file each) whose flagging is not done yet, in one folder.

    :meth:`locked` holds an exclusive lock on the folder for a whole rollback, so a plan found while
    holding it belongs to a rollback that ended (finished, failed or killed), never to one in progress.
    """

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    @contextmanager
    def locked(self) -> Iterator[Journal]:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / ".lock", "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as e:
                raise RollbackBusyError(f"another `mmfs rollback` is running with this DAGSTER_HOME ({self.folder})") from e
            try:
                yield self
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _path(self, p: RollbackPlan) -> Path:
        return self.folder / f"{p.id}.json"

    def save(self, table: TableRef, p: RollbackPlan) -> None:
        """Record ``p`` durably (written whole, then renamed into place)."""
        rec = {**p.record(), "table": table.uri, "saved_at": datetime.now(UTC).isoformat(timespec="seconds")}
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self._path(p).with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump(rec, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._path(p))

    def done(self, p: RollbackPlan) -> None:
        self._path(p).unlink(missing_ok=True)

    def pending(self, table: TableRef) -> list[RollbackPlan]:
        """The recorded plans of ``table``, oldest first."""
        out = []
        for f in sorted(self.folder.glob("*.json"), key=lambda f: f.stat().st_mtime):
            try:
                rec = json.loads(f.read_text())
                if rec.get("table") == table.uri:
                    out.append(RollbackPlan.from_record(rec))
            except (OSError, ValueError, KeyError, TypeError):
                continue  # unreadable: not ours to judge
        return out


Flag = Callable[[list[Undone], str], list[str]]


def finish_pending(table: TableRef, journal: Journal, flag: Flag) -> list[tuple[RollbackPlan, list[str]]]:
    """Finish the recorded rollbacks of ``table`` that ended before flagging (killed): (plan, flagged).

    Call with ``journal.locked()`` held. A plan whose restore never committed undid nothing and is
    dropped. Partitions re-run since the restore are not flagged: their values are current again."""
    out = []
    for p in journal.pending(table):
        if p.new_version is None:
            p.new_version = find_restore(table, p)
            if p.new_version is None:
                journal.done(p)
                continue
            try:
                account_for_races(table, p)
            except (LookupError, OSError, ValueError):  # a version it needs was cleaned up: the recorded plan
                pass
        again = rewritten_since(table, p.new_version)
        out.append((p, flag([u for u in p.undone if (u.asset, u.partition) not in again], p.target_label)))
        journal.done(p)
    return out
