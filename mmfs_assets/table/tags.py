"""Snapshots: named tags on table versions, what training jobs pin (cleanup never removes them)."""

from __future__ import annotations

from mmfs_loader.contract.table import TableRef, check_tag_name, known_tags


class TagExistsError(ValueError):
    """The tag already names a version; tags are never moved (a training recipe may point at it)."""


def create_tag(table: TableRef | str, name: str, version: int | None = None) -> int:
    """Tag ``version`` (default: the latest) as ``name``; returns the tagged version."""
    check_tag_name(name, new=True)
    table = TableRef.of(table)
    ds = table.open(version=version)  # "version 999 not found in ... (latest is 12)"
    v = ds.version
    existing = known_tags(table.uri, table.options)
    if name in existing:
        raise TagExistsError(f"tag {name!r} already names version {existing[name]} and is never moved")
    ds.tags.create(name, v)
    return v
