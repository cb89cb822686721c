"""Snapshots: named tags on table versions, what training jobs pin (cleanup never removes them)."""

from __future__ import annotations

import lance

from mmfs_loader.table import check_tag_name, check_version, known_tags


class TagExistsError(ValueError):
    """The tag already names a version; tags are never moved (a training recipe may point at it)."""


def create_tag(uri: str, name: str, version: int | None = None, storage_options: dict[str, str] | None = None) -> int:
    """Tag ``version`` (default: the latest) as ``name``; returns the tagged version."""
    check_tag_name(name)
    ds = lance.dataset(uri, storage_options=storage_options)
    v = ds.latest_version if version is None else check_version(version)
    existing = known_tags(uri, storage_options)
    if name in existing:
        raise TagExistsError(f"tag {name!r} already names version {existing[name]} and is never moved")
    ds.tags.create(name, v)
    return v
