"""Rollback: make the table read as an earlier version again, as a new commit.

Lance's ``Restore`` commits the target version's manifest as the newest version: the history stays (every
version in between can still be opened until maintenance cleans it up) and so do the tags. The plan says,
per asset and partition, what the rollback undoes: rows appended since the target (the ``videos``
partition) and column groups whose values changed since (the feature's partition), so those partitions
can be marked as needing a re-run.

``--to`` takes a tag or a version number; ``tag:NAME`` and ``version:N`` say which when a tag made before
digit-only names were refused has the same spelling as a version (a bare ``16`` is then refused as
ambiguous).

What :func:`execute` guarantees, and what it cannot:

- it refuses (:class:`TableMovedError`) when the table moved since the plan;
- Lance's ``Restore`` conflicts with nothing, so a commit landing between that check and the restore
  (a fill's chunk) is undone too. The restore's parent version says so: :func:`execute` reads the commits
  between the plan's latest version and the restore and adds them to the plan (``raced``, and their
  partitions to ``undone``), so the rollback reports and flags them instead of silently dropping them;
- the restore commit carries ``mmfs.op=rollback`` and ``mmfs.rollback_id``, so a rollback killed after its
  restore can be found again in the table's history.

- it refuses (:class:`FillRunningError`) while a fill holds a version lease (:mod:`mmfs_loader.contract.leases`):
  every fill does, whichever Dagster instance (or none) runs it, so its commits are not raced in the first place.

:mod:`mmfs_assets.store.rollback_journal` makes flagging survive a kill.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import lance

from mmfs_assets.store.lineage import Commit
from mmfs_assets.table.retry import retry_commit
from mmfs_loader.contract import leases
from mmfs_loader.contract.status import DropStatus, table_status
from mmfs_loader.contract.table import TableRef, known_tags

METADATA_GROUP = "metadata"
TAG_PREFIX, VERSION_PREFIX = "tag:", "version:"
OP, ROLLBACK_ID = "mmfs.op", "mmfs.rollback_id"  # transaction properties of the restore commit


class AmbiguousTargetError(ValueError):
    """``--to 16`` where a tag ``16`` exists too (made before digit-only tag names were refused)."""

    def __init__(self, to: str, tag_version: int):
        self.hint = (f"say which: `--to {TAG_PREFIX}{to}` (the snapshot, version {tag_version}) or "
                     f"`--to {VERSION_PREFIX}{to}` (table version {to})")
        super().__init__(f"--to {to} is ambiguous: it is a table version number and the name of snapshot {to!r} "
                         f"(version {tag_version})")


class TableMovedError(RuntimeError):
    """The table got new commits since the plan (a fill or an ingest is committing): nothing was restored."""

    def __init__(self, planned: int, now: int):
        self.planned, self.now = planned, now
        super().__init__(f"the table moved from version {planned} to {now} since the rollback was planned "
                         "(a fill or an ingest is committing): nothing was rolled back")


class FillRunningError(RuntimeError):
    """A fill is running on the table (it holds a version lease): nothing was restored."""


class RollbackBusyError(RuntimeError):
    """Another rollback of this Dagster home is in progress."""


@dataclass(frozen=True)
class Undone:
    asset: str  # "videos", "video_metadata" or a feature name
    partition: str
    what: str

    def record(self) -> dict:
        return {"asset": self.asset, "partition": self.partition, "what": self.what}


@dataclass(frozen=True)
class Raced:
    """A commit that landed after the plan's check and before the restore: the rollback undid it too."""

    version: int
    operation: str
    asset: str = ""
    partition: str = ""
    run_id: str = ""

    @classmethod
    def of(cls, c: Commit) -> Raced:
        p = c.properties
        return cls(c.version, c.operation, p.get("mmfs.asset", ""), p.get("mmfs.partition", ""), p.get("mmfs.run_id", ""))

    def describe(self) -> str:
        what = f"{self.asset}[{self.partition}]" if self.partition else (self.asset or self.operation)
        return f"version {self.version} ({what}{', run ' + self.run_id[:8] if self.run_id else ''})"

    def record(self) -> dict:
        return {"version": self.version, "operation": self.operation, "asset": self.asset,
                "partition": self.partition, "run_id": self.run_id}


@dataclass
class RollbackPlan:
    target: int
    latest: int
    target_label: str
    undone: list[Undone] = field(default_factory=list)
    new_version: int | None = None  # set once the rollback committed
    raced: list[Raced] = field(default_factory=list)  # commits undone that landed during the rollback
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    latest_restores: int | None = None  # the version the latest commit restored, when it is a restore

    @property
    def current(self) -> bool:
        """The latest version already reads as the target (it is the target, or a restore of it)."""
        return self.target == self.latest or self.latest_restores == self.target

    def record(self) -> dict:
        return {"id": self.id, "target": self.target, "latest": self.latest, "target_label": self.target_label,
                "new_version": self.new_version, "undone": [u.record() for u in self.undone],
                "raced": [r.record() for r in self.raced]}

    @classmethod
    def from_record(cls, rec: dict) -> RollbackPlan:
        return cls(int(rec["target"]), int(rec["latest"]), rec["target_label"],
                   undone=[Undone(**u) for u in rec.get("undone", [])], new_version=rec.get("new_version"),
                   raced=[Raced(**r) for r in rec.get("raced", [])], id=rec["id"])


def asset_of(group: str) -> str:
    return "video_metadata" if group == METADATA_GROUP else group


def _by_drop(drops: list[DropStatus]) -> dict[str, DropStatus]:
    return {d.drop_id: d for d in drops}


def diff(now: list[DropStatus], then: list[DropStatus]) -> list[Undone]:
    """What going from ``now`` back to ``then`` undoes, per asset and partition."""
    a, b = _by_drop(now), _by_drop(then)
    out: list[Undone] = []
    for drop in sorted(a):
        cur = a[drop]
        old = b.get(drop)
        if old is None or old.rows != cur.rows:
            gone = cur.rows - (old.rows if old else 0)
            out.append(Undone("videos", drop, f"{gone:+d} rows" if old else f"all {cur.rows} rows"))
        for g, st in sorted(cur.groups.items()):
            prev = old.groups.get(g) if old else None
            if prev is None:
                if st.filled or st.errored:
                    out.append(Undone(asset_of(g), drop, f"{st.filled + st.errored} filled rows (column group added since)"))
                continue
            if (st.filled, st.errored, st.producers) != (prev.filled, prev.errored, prev.producers):
                out.append(Undone(asset_of(g), drop,
                                  f"filled {st.filled} -> {prev.filled}, errors {st.errored} -> {prev.errored}"
                                  + (", producers change" if set(st.producers) != set(prev.producers) else "")))
    return out


def commits(table: TableRef, versions: list[int]) -> list[Commit]:
    """The commits (operation, transaction properties) of ``versions`` that are still in the table, in order.

    Reads only those versions' transactions (``lineage.live_commits`` lists every version first)."""
    ds = table.dataset()
    out = []
    for v in versions:
        try:
            tx = ds.read_transaction(v)
        except (OSError, ValueError):
            continue
        except TypeError:  # pylance 14 cannot rebuild a compaction's RewrittenIndex: not an MMFS write
            out.append(Commit(v, "Rewrite", {}))
            continue
        if tx is not None:
            name = type(tx.operation).__name__
            restored = int(getattr(tx.operation, "version")) if name == "Restore" else None  # noqa: B009
            out.append(Commit(v, name, dict(tx.transaction_properties or {}), restored=restored))
    return out


def _version(table: TableRef, v: int) -> tuple[int, str]:
    table.open(version=v)  # a clear error when it does not exist (or was cleaned up)
    return v, f"version {v}"


def _tag(table: TableRef, name: str) -> tuple[int, str]:
    tags = known_tags(table.uri, table.options)
    v = tags[name] if name in tags else table.open(tag=name).version  # "no such tag ... known: ..."
    return v, f"snapshot {name} (version {v})"


def _digits(s: str) -> bool:
    return s.isascii() and s.isdigit()


def resolve_target(table: TableRef, to: str) -> tuple[int, str]:
    """(version, label) for ``--to``: a tag name, a version number, ``tag:NAME`` or ``version:N``.

    A bare number is a version; it is refused (:class:`AmbiguousTargetError`) when a tag of that name
    exists too."""
    if to.startswith(TAG_PREFIX):
        return _tag(table, to[len(TAG_PREFIX):])
    if to.startswith(VERSION_PREFIX):
        v = to[len(VERSION_PREFIX):]
        if not _digits(v):
            raise ValueError(f"--to {to}: {v!r} is not a version number")
        return _version(table, int(v))
    if _digits(to):
        tags = known_tags(table.uri, table.options)
        if to in tags:
            raise AmbiguousTargetError(to, tags[to])
        return _version(table, int(to))
    return _tag(table, to)


def plan(table: TableRef | str, to: str) -> RollbackPlan:
    table = TableRef.of(table)
    version, label = resolve_target(table, to)
    latest = table.open()
    target = table.open(version=version)
    last = commits(table, [latest.version])
    p = RollbackPlan(version, latest.version, label, latest_restores=last[0].restored if last else None)
    p.undone = [] if p.current else diff(table_status(latest), table_status(target))
    return p


def execute(table: TableRef | str, p: RollbackPlan) -> RollbackPlan:
    """Commit the target version as the newest one. Refuses when the table moved since the plan; reports
    (``p.raced``, ``p.undone``) commits that landed in the moment between that check and the restore."""
    table = TableRef.of(table)
    refuse_if_filling(table)
    refuse_if_moved(table, p)
    restore(table, p)
    account_for_races(table, p)
    return p


def refuse_if_filling(table: TableRef) -> None:
    running = leases.running_fills(table)
    if running:
        raise FillRunningError("a fill is running on the table: " + "; ".join(r.describe() for r in running[:5])
                               + ": nothing was rolled back")


def refuse_if_moved(table: TableRef, p: RollbackPlan) -> None:
    now = table.dataset().version
    if now != p.latest:
        raise TableMovedError(p.latest, now)


def restore(table: TableRef, p: RollbackPlan) -> None:
    """The restore commit, marked with the plan's id (what :func:`find_restore` looks for)."""
    tx = lance.Transaction(read_version=p.latest, operation=lance.LanceOperation.Restore(p.target),
                           transaction_properties={OP: "rollback", ROLLBACK_ID: p.id, "mmfs.rollback_to": p.target_label})
    new = retry_commit(lambda _n: lance.LanceDataset.commit(table.uri, tx, storage_options=table.options))
    p.new_version = new.version


def account_for_races(table: TableRef, p: RollbackPlan) -> None:
    """Add the commits between the plan's latest version and the restore to the plan: what the restore
    really undid is the difference between its parent version and the target."""
    assert p.new_version is not None
    parent = p.new_version - 1
    if parent <= p.latest:
        return
    p.raced = [Raced.of(c) for c in commits(table, list(range(p.latest + 1, parent + 1)))]
    if not p.raced:
        p.raced = [Raced(v, "unknown") for v in range(p.latest + 1, parent + 1)]
    undone = {(u.asset, u.partition): u for u in diff(table_status(table.open(version=parent)),
                                                      table_status(table.open(version=p.target)))}
    raced: dict[tuple[str, str], list[int]] = {}
    for r in p.raced:
        if r.asset and r.partition:
            raced.setdefault((r.asset, r.partition), []).append(r.version)
    for (asset, part), versions in raced.items():
        u = undone.get((asset, part))
        note = f"version{'s' if len(versions) > 1 else ''} {', '.join(map(str, versions))}, committed while the rollback ran"
        undone[(asset, part)] = Undone(asset, part, f"{u.what}; includes {note}" if u else note)
    p.undone = [undone[k] for k in sorted(undone)]
