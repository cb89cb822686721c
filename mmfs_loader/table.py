"""Opening the shared table at the latest version, a pinned version number or a tag."""

from __future__ import annotations

import lance


class TableNotFoundError(FileNotFoundError):
    """The table URI holds no Lance dataset."""


class VersionNotFoundError(LookupError):
    """The requested version or tag does not exist (or was cleaned up)."""


def open_table(
    uri: str,
    *,
    version: int | None = None,
    tag: str | None = None,
    storage_options: dict[str, str] | None = None,
) -> lance.LanceDataset:
    """Open the table, pinned to ``version`` or ``tag`` when given (not both)."""
    if version is not None and tag is not None:
        raise ValueError("give a version or a tag, not both")
    try:
        ds = lance.dataset(uri, storage_options=storage_options)
    except (ValueError, OSError) as e:
        if "not found" in str(e).lower() or "does not exist" in str(e).lower():
            raise TableNotFoundError(f"no MMFS table at {uri!r}: ingest a drop first") from e
        raise
    pin = tag if tag is not None else version
    if pin is None:
        return ds
    try:
        return ds.checkout_version(pin)
    except (ValueError, OSError, KeyError) as e:
        known = sorted(ds.tags.list()) if tag is not None else None
        what = f"tag {tag!r}" if tag is not None else f"version {version}"
        hint = f" (known tags: {known})" if known is not None else f" (latest is {ds.latest_version})"
        raise VersionNotFoundError(f"{what} not found in {uri}{hint}") from e
