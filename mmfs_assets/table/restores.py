"""Rollbacks seen from a writer: did a ``restore`` commit after my commits undo them?

A rollback (``mmfs rollback``) commits an earlier version's manifest as the newest version. A fill whose
commits landed before that restore but after the version it restored has lost its values, and must not
report success: :func:`undone_by_restore` finds such restores in the table's own history.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from mmfs_loader.contract.table import TableRef


@dataclass(frozen=True)
class Restore:
    version: int  # the restore's own commit
    target: int  # the version it made the table read as again


def restores_after(table: TableRef, version: int, skip: Collection[int] = ()) -> list[Restore]:
    """Restore commits newer than ``version``, oldest first (versions whose history is gone and the versions in
    ``skip``, known not to be restores, are not read)."""
    ds = table.dataset()
    out = []
    for v in range(version + 1, ds.version + 1):
        if v in skip:
            continue
        try:
            tx = ds.read_transaction(v)
        except (OSError, ValueError, TypeError):
            continue
        op = getattr(tx, "operation", None)
        if type(op).__name__ == "Restore":
            out.append(Restore(v, int(getattr(op, "version"))))  # noqa: B009
    return out


def undone_by_restore(table: TableRef, commits: list[int]) -> Restore | None:
    """The first restore that undid one of ``commits`` (versions this writer created), if any."""
    if not commits:
        return None
    for r in restores_after(table, min(commits), skip=set(commits)):  # one transaction read per other writer's commit
        if any(r.target < c < r.version for c in commits):
            return r
    return None
