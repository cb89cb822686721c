"""Snapshots: a tag on a table version plus a manifest of what that version holds.

``create`` checks the required features first and refuses, listing every problem, when one has rows
without values (never computed for some rows) or values from more than one producer (a mix of models or
code versions). Rows whose feature failed (an error, such as a quarantined video) are values too: they are
counted in the manifest, and the loader skips them. Then it tags the version (tags are never moved) and
stores the manifest (version, rows, partitions, columns, producers with counts) in the ``snapshots`` side
table. Training jobs open a snapshot by its tag name, as before.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

import pyarrow as pa

from mmfs_assets.store import side_tables
from mmfs_assets.table.tags import create_tag
from mmfs_loader.contract import schema as S
from mmfs_loader.contract.sql import equals
from mmfs_loader.contract.status import table_status
from mmfs_loader.contract.table import TableRef, check_tag_name, known_tags, require_table

SIDE = "snapshots"
SIDE_SCHEMA = pa.schema([
    pa.field("name", pa.string()), pa.field("version", pa.int64()),
    pa.field("created_at", pa.timestamp("us", tz="UTC")), pa.field("manifest", pa.string()),
])


class SnapshotRefused(ValueError):
    """A required feature is not complete at the version to snapshot; ``problems`` lists why."""

    def __init__(self, name: str, version: int, problems: list[str]):
        self.problems = problems
        super().__init__(f"snapshot {name!r} of version {version} refused: " + "; ".join(problems))


@dataclass
class GroupManifest:
    filled: int
    errored: int
    missing: int
    producers: dict[str, int]


@dataclass
class Manifest:
    name: str
    version: int
    rows: int
    partitions: dict[str, int]  # drop id -> rows
    columns: list[str]
    groups: dict[str, GroupManifest]
    required: list[str] = field(default_factory=list)
    created_at: str = ""
    stored: bool = True  # False: computed now (the stored manifest is missing: a tag made without one)

    def record(self) -> dict:
        return asdict(self)

    @classmethod
    def from_record(cls, rec: dict) -> Manifest:
        rec = dict(rec)
        rec["groups"] = {g: GroupManifest(**v) for g, v in rec["groups"].items()}
        return cls(**rec)


def build_manifest(table: TableRef, name: str, version: int | None, required: list[str] | None = None) -> Manifest:
    """The manifest of ``version`` (default the latest), computed from the table at that version."""
    ds = table.open(version=version)
    drops = table_status(ds)
    groups: dict[str, GroupManifest] = {}
    for d in drops:
        for g, st in d.groups.items():
            gm = groups.setdefault(g, GroupManifest(0, 0, 0, {}))
            gm.filled += st.filled
            gm.errored += st.errored
            gm.missing += st.missing
            for p, n in st.producers.items():
                gm.producers[p] = gm.producers.get(p, 0) + n
    return Manifest(
        name=name, version=ds.version, rows=sum(d.rows for d in drops),
        partitions={d.drop_id: d.rows for d in drops},
        columns=[c for c in ds.schema.names if c not in S.BLOB_COLUMNS],
        groups=groups, required=list(required or []),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def problems(manifest: Manifest, required: list[str], drops_missing: dict[str, dict[str, int]]) -> list[str]:
    """Why ``manifest`` cannot be a snapshot of ``required`` features (empty: it can)."""
    out = []
    for feature in required:
        gm = manifest.groups.get(feature)
        if gm is None:
            known = ", ".join(sorted(manifest.groups)) or "none"
            out.append(f"{feature}: no values in version {manifest.version} (never filled on this table, or not a "
                       f"feature; column groups: {known})")
            continue
        if gm.missing:
            where = ", ".join(f"{d} ({n})" for d, n in sorted(drops_missing.get(feature, {}).items())[:10])
            out.append(f"{feature}: {gm.missing} rows without values, in drops {where}")
        models: dict[str, int] = {}  # rows sampled at other frames are one model (sampling=auto)
        for p, n in gm.producers.items():
            models[S.producer_model(p)] = models.get(S.producer_model(p), 0) + n
        if len(models) > 1:
            mix = ", ".join(f"{p} ({n} rows)" for p, n in sorted(models.items(), key=lambda kv: -kv[1]))
            out.append(f"{feature}: {len(models)} producers: {mix}")
    return out


def create(table: TableRef | str, name: str, *, version: int | None = None, require: list[str] | None = None) -> Manifest:
    """Check ``require``, tag the version as ``name`` and store its manifest."""
    table = TableRef.of(table)
    check_tag_name(name, new=True)  # Lance's rule, and not only digits: `rollback --to 16` means version 16
    tags = known_tags(table.uri, table.options)
    if name in tags:
        from mmfs_assets.table.tags import TagExistsError

        raise TagExistsError(f"snapshot {name!r} already names version {tags[name]} and is never moved")
    require = list(dict.fromkeys(require or []))
    manifest = build_manifest(table, name, version, require)
    ds = table.open(version=manifest.version)
    missing_by_drop = {
        f: {d.drop_id: d.groups[f].missing for d in table_status(ds) if f in d.groups and d.groups[f].missing}
        for f in require
    }
    found = problems(manifest, require, missing_by_drop)
    if found:
        raise SnapshotRefused(name, manifest.version, found)
    create_tag(table, name, manifest.version)
    side_tables.append(table, SIDE, pa.table({
        "name": [name], "version": [manifest.version], "created_at": [datetime.now(UTC)],
        "manifest": [json.dumps(manifest.record())],
    }, schema=SIDE_SCHEMA))
    return manifest


def _tags(table: TableRef) -> dict[str, int]:
    """The snapshots' tags (name -> version); :class:`~mmfs_loader.contract.table.TableNotFoundError` when there is no
    table (not an empty list: a wrong MMFS_TABLE_URI must not read as "no snapshots yet")."""
    require_table(table.uri, table.options)
    return known_tags(table.uri, table.options)


def show(table: TableRef | str, name: str) -> Manifest:
    """The stored manifest of snapshot ``name`` (computed from its version when none was stored)."""
    table = TableRef.of(table)
    check_tag_name(name)
    tags = _tags(table)
    if name not in tags:
        from mmfs_loader.contract.table import VersionNotFoundError

        raise VersionNotFoundError(f"no snapshot {name!r} in {table.uri}; known: {', '.join(sorted(tags)) or 'none'}")
    rows = side_tables.read(table, SIDE, equals("name", name))
    if rows is not None:
        recs = [r for r in rows.to_pylist() if r["version"] == tags[name]]
        if recs:
            return Manifest.from_record(json.loads(recs[-1]["manifest"]))
    m = build_manifest(table, name, tags[name])
    m.stored = False
    return m


def listing(table: TableRef | str) -> list[dict]:
    """Every tag, with its manifest's row count, required features and creation time when stored."""
    table = TableRef.of(table)
    tags = _tags(table)
    rows = side_tables.read(table, SIDE)
    stored = {}
    for r in (rows.to_pylist() if rows is not None else []):
        if tags.get(r["name"]) == r["version"]:
            stored[r["name"]] = json.loads(r["manifest"])
    out = []
    for name, v in sorted(tags.items(), key=lambda kv: (kv[1], kv[0])):
        m = stored.get(name)
        out.append({
            "name": name, "version": v, "rows": m["rows"] if m else None,
            "required": ",".join(m["required"]) if m else "", "created_at": m["created_at"] if m else "",
            "manifest": m is not None,
        })
    return out


def delete(table: TableRef | str, name: str) -> int:
    """Remove snapshot ``name`` (its tag and manifest); returns the version it named. Maintenance may then
    clean that version up once it passes the retention."""
    table = TableRef.of(table)
    check_tag_name(name)
    tags = _tags(table)
    if name not in tags:
        from mmfs_loader.contract.table import VersionNotFoundError

        raise VersionNotFoundError(f"no snapshot {name!r} in {table.uri}; known: {', '.join(sorted(tags)) or 'none'}")
    table.dataset().tags.delete(name)
    side_tables.delete(table, SIDE, equals("name", name))
    return tags[name]
