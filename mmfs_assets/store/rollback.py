"""Rollback: make the table read as an earlier version again, as a new commit.

Lance's ``restore`` commits the target version's manifest as the newest version: the history stays (every
version in between can still be opened until maintenance cleans it up) and so do the tags. The plan says,
per asset and partition, what the rollback undoes: rows appended since the target (the ``videos``
partition) and column groups whose values changed since (the feature's partition), so those partitions
can be marked as needing a re-run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import lance

from mmfs_loader.status import DropStatus, table_status
from mmfs_loader.table import TableRef, known_tags

METADATA_GROUP = "metadata"


@dataclass(frozen=True)
class Undone:
    asset: str  # "videos", "video_metadata" or a feature name
    partition: str
    what: str

    def record(self) -> dict:
        return {"asset": self.asset, "partition": self.partition, "what": self.what}


@dataclass
class RollbackPlan:
    target: int
    latest: int
    target_label: str
    undone: list[Undone] = field(default_factory=list)
    new_version: int | None = None  # set once the rollback committed


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


def resolve_target(table: TableRef, to: str) -> tuple[int, str]:
    """(version, label) for a tag name or a version number."""
    if to.isdigit():
        v = int(to)
        table.open(version=v)  # a clear error when it does not exist (or was cleaned up)
        return v, f"version {v}"
    tags = known_tags(table.uri, table.options)
    if to not in tags:
        table.open(tag=to)  # raises the "no such tag ... known: ..." error
    return tags[to], f"snapshot {to} (version {tags[to]})"


def plan(table: TableRef | str, to: str) -> RollbackPlan:
    table = TableRef.of(table)
    version, label = resolve_target(table, to)
    latest = table.open()
    target = table.open(version=version)
    p = RollbackPlan(version, latest.version, label)
    p.undone = diff(table_status(latest), table_status(target)) if version != latest.version else []
    return p


def execute(table: TableRef | str, p: RollbackPlan) -> RollbackPlan:
    """Commit the target version as the newest one. Refuses when the table moved since the plan."""
    table = TableRef.of(table)
    latest = table.dataset()
    if latest.version != p.latest:
        raise RuntimeError(f"the table moved from version {p.latest} to {latest.version} since the plan: run it again")
    ds = lance.dataset(table.uri, version=p.target, storage_options=table.options)
    ds.restore()
    p.new_version = table.dataset().version
    return p
