"""Lineage: who wrote each column group of a table version, from which runs, in which commits.

Every MMFS commit carries transaction properties (``mmfs.op``, ``mmfs.asset``, ``mmfs.partition``,
``mmfs.run_id``, ``mmfs.columns`` for column writes). :func:`commit_log` reads them back along the history
that leads to a version: a rollback (Lance ``Restore``) jumps back to the version it restored, so commits it
undid are not counted. Maintenance archives the records of versions it cleans up into the ``lineage`` side
table first, so lineage survives retention. :func:`lineage` joins that log with the per-row producers of the
version (partitions and row counts per producer).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import lance
import pyarrow as pa

from mmfs_assets.store import side_tables
from mmfs_loader.contract import schema as S
from mmfs_loader.contract.status import table_status
from mmfs_loader.contract.table import TableRef

SIDE = "lineage"
INGEST_GROUP = "ingest"
SIDE_SCHEMA = pa.schema([
    pa.field("version", pa.int64()), pa.field("read_version", pa.int64()), pa.field("operation", pa.string()),
    pa.field("restored", pa.int64()), pa.field("timestamp", pa.string()), pa.field("properties", pa.map_(pa.string(), pa.string())),
])


@dataclass(frozen=True)
class Commit:
    version: int
    operation: str  # Lance operation name: Append, DataReplacement, Restore, CreateIndex, Rewrite, ...
    properties: dict[str, str]
    timestamp: str = ""
    restored: int | None = None  # for Restore: the version it made current again

    def record(self) -> dict:
        return {"version": self.version, "operation": self.operation, "restored": self.restored,
                "timestamp": self.timestamp, "properties": self.properties}


def _commit(ds: lance.LanceDataset, version: int, stamps: dict[int, str]) -> Commit | None:
    try:
        tx = ds.read_transaction(version)
    except (OSError, ValueError):
        return None
    except TypeError:  # pylance 14 cannot rebuild a compaction's RewrittenIndex: not an MMFS write anyway
        return Commit(version, "Rewrite", {}, stamps.get(version, ""))
    if tx is None:
        return None
    op = tx.operation
    name = type(op).__name__
    restored = int(getattr(op, "version")) if name == "Restore" else None  # noqa: B009
    return Commit(version, name, dict(tx.transaction_properties or {}), stamps.get(version, ""), restored)


def live_commits(table: TableRef, versions: list[int] | None = None) -> dict[int, Commit]:
    """Version -> commit for the versions whose manifests and transactions are still in the table."""
    ds = table.dataset()
    stamps = {int(v["version"]): _iso(v.get("timestamp")) for v in ds.versions()}
    out = {}
    for v in versions if versions is not None else sorted(stamps):
        c = _commit(ds, v, stamps)
        if c is not None:
            out[v] = c
    return out


def _iso(ts) -> str:
    return ts.isoformat(timespec="seconds") if isinstance(ts, datetime) else str(ts or "")


def archive(table: TableRef | str, versions: list[int]) -> int:
    """Store the commit records of ``versions`` (about to be cleaned up) in the lineage side table."""
    table = TableRef.of(table)
    known = archived(table)
    commits = [c for v, c in live_commits(table, [v for v in versions if v not in known]).items()]
    if commits:
        side_tables.append(table, SIDE, pa.Table.from_pylist(
            [{**c.record(), "read_version": None, "properties": list(c.properties.items())} for c in commits],
            schema=SIDE_SCHEMA))
    return len(commits)


def archived(table: TableRef) -> dict[int, Commit]:
    t = side_tables.read(table, SIDE)
    out = {}
    for r in (t.to_pylist() if t is not None else []):
        out[int(r["version"])] = Commit(int(r["version"]), r["operation"], dict(r["properties"] or []),
                                        r["timestamp"] or "", r["restored"])
    return out


def commit_log(table: TableRef | str, version: int) -> list[Commit]:
    """The commits that make up ``version``, oldest first (restores followed back to what they restored)."""
    table = TableRef.of(table)
    commits = {**archived(table), **live_commits(table)}
    path: list[Commit] = []
    v = version
    while v >= 1:
        c = commits.get(v)
        if c is None:
            v -= 1
            continue
        if c.restored is not None:
            path.append(c)
            v = c.restored
            continue
        path.append(c)
        v -= 1
    return list(reversed(path))


@dataclass
class GroupLineage:
    group: str
    producers: dict[str, int] = field(default_factory=dict)  # producer -> rows
    partitions: dict[str, dict[str, int]] = field(default_factory=dict)  # drop -> producer -> rows
    versions: list[int] = field(default_factory=list)
    run_ids: list[str] = field(default_factory=list)

    def record(self) -> dict:
        return {"producers": self.producers, "partitions": self.partitions, "versions": self.versions,
                "run_ids": self.run_ids}


def lineage(table: TableRef | str, *, version: int | None = None, tag: str | None = None) -> tuple[int, dict[str, GroupLineage]]:
    """(version, group -> lineage) for the latest version, a version or a tag."""
    table = TableRef.of(table)
    ds = table.open(version=version, tag=tag)
    schema = ds.schema
    groups: dict[str, GroupLineage] = {INGEST_GROUP: GroupLineage(INGEST_GROUP)}
    for d in table_status(ds):
        ing = groups[INGEST_GROUP]
        ing.partitions[d.drop_id] = {"videos": d.rows}
        ing.producers["videos"] = ing.producers.get("videos", 0) + d.rows
        for g, st in d.groups.items():
            gl = groups.setdefault(g, GroupLineage(g))
            gl.partitions[d.drop_id] = dict(st.producers)
            for p, n in st.producers.items():
                gl.producers[p] = gl.producers.get(p, 0) + n
    for c in commit_log(table, ds.version):
        op = c.properties.get("mmfs.op", "")
        if op == "append" or c.operation == "Append":
            touched = {INGEST_GROUP}
        elif c.properties.get("mmfs.columns"):
            touched = {S.group_of(schema, col) or INGEST_GROUP
                       for col in c.properties["mmfs.columns"].split(",") if col in schema.names}
        else:
            continue
        for g in touched:
            gl = groups.setdefault(g, GroupLineage(g))
            gl.versions.append(c.version)
            run = c.properties.get("mmfs.run_id")
            if run and run not in gl.run_ids:
                gl.run_ids.append(run)
    return ds.version, groups
