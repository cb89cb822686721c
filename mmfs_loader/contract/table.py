"""Opening the shared table at the latest version, a pinned version number or a tag.

A pinned version or tag is opened directly (``lance.dataset(uri, version=...)``), never by opening the
latest version first: a damaged latest manifest must not block reads of an intact older version.
Tag names follow Lance's own rule (:func:`check_tag_name`), narrowed to ASCII: Lance accepts some non-ASCII
names and then cannot list its tags any more.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import lance

SAFE_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class TableNotFoundError(FileNotFoundError):
    """The table URI holds no Lance dataset."""


class VersionNotFoundError(LookupError):
    """The requested version or tag does not exist (or was cleaned up)."""


class VersionGoneError(RuntimeError):
    """The pinned version a reader was reading was removed while it read (its snapshot deleted, then
    ``mmfs maintain``): the reader stops instead of yielding different (empty) samples."""


@dataclass(frozen=True, eq=False)
class TableRef:
    """Where the table is: its URI and the storage options that reach it.

    What every part of the write engine takes instead of a (uri, storage options) pair. The options may
    hold secrets (object-store keys): ``repr`` shows their names only, so a ref can be logged.
    A plain string is a ref without options (:meth:`of`).
    """

    uri: str
    storage_options: Mapping[str, str] | None = None

    @classmethod
    def of(cls, table: TableRef | str, storage_options: Mapping[str, str] | None = None) -> TableRef:
        """``table`` as a ref (a URI string gets ``storage_options``)."""
        if isinstance(table, TableRef):
            return table
        return cls(str(table), dict(storage_options) if storage_options else None)

    @property
    def options(self) -> dict[str, str] | None:
        """The storage options as Lance takes them (None when there are none)."""
        return dict(self.storage_options) if self.storage_options else None

    def open(self, *, version: int | None = None, tag: str | None = None) -> lance.LanceDataset:
        """:func:`open_table`: the latest version, or a pinned one, with clear errors for a missing table,
        version or tag."""
        return open_table(self.uri, version=version, tag=tag, storage_options=self.options)

    def dataset(self, version: int | None = None) -> lance.LanceDataset:
        """``lance.dataset`` at the latest (or ``version``), errors as Lance raises them: for the write
        paths, whose retries look at Lance's own errors."""
        return lance.dataset(self.uri, version=version, storage_options=self.options)

    def __repr__(self) -> str:
        names = ", ".join(sorted(self.storage_options or {}))
        return f"TableRef({self.uri!r}, storage_options=[{names}])"

    __str__ = __repr__


#: Tags with this prefix are version leases of running fills and readers, not snapshots (mmfs_loader.contract.leases).
LEASE_PREFIX = "mmfs-lease-"


TAG_RULE = (
    "a tag name is 1-128 ASCII letters, digits, '.', '_' or '-', starts with a letter or digit, has no '..', "
    "does not end with '.' or '.lock', and is not only digits"
)


def _tag_name_problem(name: object, new: bool) -> str | None:
    """Why ``name`` cannot be a tag name (None: it can).

    Lance's rule (``check_valid_ref`` in lance-table's refs, pylance 14): not empty; only alphanumerics,
    '.', '-' and '_'; no leading or trailing '.'; no '..'; not ending in '.lock' (a name that breaks it
    fails inside Lance as an I/O error). MMFS narrows it: ASCII only (Lance stores some non-ASCII names and
    then cannot list its tags), at most 128 characters (a file name on every store), a letter or digit
    first (never read as a CLI option) and, for a new tag, not only digits (``16`` must mean one thing
    where a version number or a tag is accepted, e.g. ``mmfs rollback --to 16``).
    """
    if not isinstance(name, str) or not name:
        return "it is empty"
    if not SAFE_TAG.match(name):
        if len(name) > 128:
            return f"it has {len(name)} characters"
        bad = sorted({c for c in name if not (c.isascii() and (c.isalnum() or c in "._-"))})
        if bad:
            return f"it holds {', '.join(repr(c) for c in bad[:5])}"
        return f"it starts with {name[0]!r}"
    if ".." in name:
        return "it has two dots in a row"
    if name.endswith(".lock"):
        return "it ends with '.lock'"
    if name.endswith("."):
        return "it ends with a dot"
    if new and name.isdigit():
        return f"it is only digits (it would read as version {int(name)})"
    if new and name.startswith(LEASE_PREFIX):
        return f"names starting with {LEASE_PREFIX!r} are the version leases of running fills"
    return None


def check_tag_name(name: str, *, new: bool = False) -> str:
    """``name`` if it is a valid tag name, else ValueError naming the rule (:data:`TAG_RULE`).

    ``new``: the name of a tag about to be created, which must not be only digits either. Lance itself
    allows such names, so tags made before this rule may have them: they can still be read and deleted.
    """
    why = _tag_name_problem(name, new)
    if why is not None:
        raise ValueError(f"invalid tag name {name!r}: {why}; {TAG_RULE}")
    return name


def check_version(version) -> int:
    """``version`` as an int if it can name a table version (1, 2, ...), else ValueError."""
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"version must be a positive integer (table versions start at 1), not {version!r}")
    return version


def not_found(e: BaseException) -> bool:
    """Whether ``e`` says a table, version or file does not exist (Lance words it several ways)."""
    msg = str(e).lower()
    return isinstance(e, FileNotFoundError) or "not found" in msg or "does not exist" in msg or "no such file" in msg


def known_tags(uri: str, storage_options: dict[str, str] | None = None, *, include_leases: bool = False) -> dict[str, int]:
    """Tag name -> version, readable even when one stored tag has a name Lance cannot list.

    Version leases (tags named ``LEASE_PREFIX...``, held by running fills, see
    ``mmfs_loader.contract.leases``) are not snapshots: they are left out unless ``include_leases``."""
    out: dict[str, int] = {}
    try:
        ds = lance.dataset(uri, storage_options=storage_options)
        out = {k: int(v["version"]) for k, v in ds.tags.list().items()}
    except Exception:  # noqa: BLE001 - fall back to reading the tag files of a local table
        refs = Path(uri) / "_refs" / "tags"
        if "://" not in uri and refs.is_dir():
            for f in sorted(refs.glob("*.json")):
                try:
                    out[f.stem] = int(json.loads(f.read_text())["version"])
                except (OSError, ValueError, KeyError):
                    continue
    return out if include_leases else {k: v for k, v in out.items() if not k.startswith(LEASE_PREFIX)}


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
    if version is not None:
        check_version(version)
    if tag is not None and tag.startswith(LEASE_PREFIX):  # a running fill's or reader's lease, not a snapshot
        known = sorted(known_tags(uri, storage_options))
        raise VersionNotFoundError(f"no such tag {tag!r} in {uri} ({LEASE_PREFIX}... tags are the version leases of "
                                   f"running fills and readers, not snapshots); known: {', '.join(known) or 'none'}")
    pin = tag if tag is not None else version
    try:
        return lance.dataset(uri, version=pin, storage_options=storage_options)
    except OverflowError as e:
        raise ValueError(f"version {version!r} is out of range") from e
    except (ValueError, OSError, KeyError) as e:
        if pin is None:
            if not_found(e):
                raise missing_table(uri) from e
            raise
        if not table_exists(uri, storage_options):
            raise missing_table(uri) from e
        if tag is not None:
            known = sorted(known_tags(uri, storage_options))
            raise VersionNotFoundError(f"no such tag {tag!r} in {uri}; known: {', '.join(known) or 'none'}") from e
        raise VersionNotFoundError(f"version {version} not found in {uri} ({_latest_hint(uri, storage_options)})") from e


def missing_table(uri: str) -> TableNotFoundError:
    """The error of a read that needs the table where ``uri`` holds none."""
    return TableNotFoundError(f"no MMFS table at {uri!r}: ingest a drop first")


def require_table(uri: str, storage_options: dict[str, str] | None = None) -> None:
    """Raise :func:`missing_table` unless ``uri`` holds a Lance dataset: for reads that would otherwise
    answer "nothing" (no tags, no rows) about a table that is not there."""
    if not table_exists(uri, storage_options):
        raise missing_table(uri)


def table_exists(uri: str, storage_options: dict[str, str] | None = None) -> bool:
    """Whether ``uri`` holds a Lance dataset (any readable or damaged version)."""
    if "://" not in uri:
        return (Path(uri) / "_versions").is_dir()
    try:
        lance.dataset(uri, storage_options=storage_options)
        return True
    except Exception as e:  # noqa: BLE001
        return not not_found(e)


def _latest_hint(uri: str, storage_options: dict[str, str] | None) -> str:
    try:
        return f"latest is {lance.dataset(uri, storage_options=storage_options).latest_version}"
    except Exception as e:  # noqa: BLE001 - the hint must not hide the real error
        return f"the latest version cannot be opened: {str(e).splitlines()[0][:200]}"
