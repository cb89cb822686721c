"""Table health: which versions can be read, and data files no version references (orphans).

A damaged manifest (a bad write, a hand edit, a disk fault) must not hide the rest of the table: every
version has its own manifest, and pinned reads open theirs directly. :func:`check_table` says which of the
newest versions are damaged and which is the newest readable one, so ``mmfs status`` can report it
without a traceback. Orphan data files are left by writers killed between writing a file and committing
it (or by lost commit races); they are harmless to readers and are only counted here (local tables).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import lance

U64_MAX = (1 << 64) - 1
CHECK_NEWEST = 20  # how far back (from the latest) a readable version is looked for
ORPHAN_MAX_VERSIONS = 200  # counting orphans opens every version: skipped (None) above this


@dataclass
class TableHealth:
    latest_version: int | None = None
    newest_readable: int | None = None
    damaged: dict[int, str] = field(default_factory=dict)  # version -> first line of the error
    orphan_data_files: int | None = None  # None: not counted (object store)

    @property
    def latest_ok(self) -> bool:
        return self.latest_version is not None and self.latest_version == self.newest_readable


def _manifest_version(name: str) -> int | None:
    stem = name.removesuffix(".manifest")
    if not stem.isdigit():
        return None
    n = int(stem)
    return U64_MAX - n if n > (1 << 63) else n  # V2 names count down from u64::MAX


def local_versions(uri: str) -> list[int]:
    """Version numbers that have a manifest in a local table, ascending."""
    d = Path(uri) / "_versions"
    if not d.is_dir():
        return []
    return sorted(v for p in d.glob("*.manifest") if (v := _manifest_version(p.name)) is not None)


def _first_line(e: BaseException) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0][:300]


def check_table(uri: str, storage_options: dict[str, str] | None = None) -> TableHealth:
    """Readability of the newest versions and (local tables) the count of orphan data files."""
    h = TableHealth()
    local = "://" not in uri
    versions = local_versions(uri) if local else []
    if not local:
        try:
            ds = lance.dataset(uri, storage_options=storage_options)
            h.latest_version = h.newest_readable = ds.version
        except Exception as e:  # noqa: BLE001
            h.damaged[-1] = _first_line(e)
        return h
    if not versions:
        return h
    h.latest_version = versions[-1]
    for v in reversed(versions[-CHECK_NEWEST:]):  # newest first: one open when the latest is fine
        try:
            lance.dataset(uri, version=v, storage_options=storage_options)
        except Exception as e:  # noqa: BLE001 - a damaged manifest is what we are looking for
            h.damaged[v] = _first_line(e)
            continue
        h.newest_readable = v
        break
    h.orphan_data_files = _count_orphans(uri, versions, storage_options)
    return h


def _count_orphans(uri: str, versions: list[int], storage_options) -> int | None:
    data = Path(uri) / "data"
    if len(versions) > ORPHAN_MAX_VERSIONS:
        return None
    on_disk = {p.name for p in data.glob("*.lance")} if data.is_dir() else set()
    if not on_disk:
        return 0
    referenced: set[str] = set()
    for v in versions:
        try:
            ds = lance.dataset(uri, version=v, storage_options=storage_options)
        except Exception:  # noqa: BLE001 - a damaged version's files cannot be known: do not count
            return None
        for frag in ds.get_fragments():
            referenced.update(Path(f.path).name for f in frag.data_files())
    return len(on_disk - referenced)
