"""Snapshots: named tags on table versions, what training jobs pin (cleanup never removes them)."""

from __future__ import annotations

import lance


class TagExistsError(ValueError):
    """The tag already names a version; tags are never moved (a training recipe may point at it)."""


def create_tag(uri: str, name: str, version: int | None = None, storage_options: dict[str, str] | None = None) -> int:
    """Tag ``version`` (default: the latest) as ``name``; returns the tagged version."""
    if not name or any(c in name for c in "/\\ \x00"):
        raise ValueError(f"invalid tag name {name!r} (no spaces or slashes)")
    ds = lance.dataset(uri, storage_options=storage_options)
    v = ds.latest_version if version is None else int(version)
    existing = ds.tags.list()
    if name in existing:
        raise TagExistsError(f"tag {name!r} already names version {existing[name]['version']} and is never moved")
    ds.tags.create(name, v)
    return v
