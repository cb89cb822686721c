"""Snapshots: named tags on table versions, what training jobs pin (cleanup never removes them)."""

from __future__ import annotations

from mmfs_loader.table import check_tag_name, known_tags, open_table


class TagExistsError(ValueError):
    """The tag already names a version; tags are never moved (a training recipe may point at it)."""


def create_tag(uri: str, name: str, version: int | None = None, storage_options: dict[str, str] | None = None) -> int:
    """Tag ``version`` (default: the latest) as ``name``; returns the tagged version."""
    check_tag_name(name)
    ds = open_table(uri, version=version, storage_options=storage_options)  # "version 999 not found (latest is 12)"
    v = ds.version
    existing = known_tags(uri, storage_options)
    if name in existing:
        raise TagExistsError(f"tag {name!r} already names version {existing[name]} and is never moved")
    ds.tags.create(name, v)
    return v
