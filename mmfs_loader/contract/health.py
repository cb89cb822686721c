"""Table health: which versions can be read, and files no version references (orphans).

A damaged manifest (a bad write, a hand edit, a disk fault) must not hide the rest of the table: every
version has its own manifest, and pinned reads open theirs directly. :func:`check_table` says which of the
newest versions are damaged and which is the newest readable one, so ``mmfs status`` can report it
without a traceback. Orphan files are left by writers killed between writing a file and committing it, by
lost commit races and by writes that failed half-way (a full disk): data files ``data/<name>.lance`` and
the blob v2 sidecars Lance writes beside them for large values, ``data/<name>/<n>.blob`` (the folder is
named after the data file whose rows point into it). They are harmless to readers, but can be large (the
sidecars hold the video bytes): they are counted here with their size (local tables), and ``mmfs maintain``
deletes them.
"""

from __future__ import annotations

import os
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
    orphan_blob_files: int | None = None  # blob sidecars of data files no version references
    orphan_bytes: int | None = None  # both kinds together

    @property
    def orphan_files(self) -> int:
        return (self.orphan_data_files or 0) + (self.orphan_blob_files or 0)

    @property
    def latest_ok(self) -> bool:
        return self.latest_version is not None and self.latest_version == self.newest_readable


def human_bytes(n: int) -> str:
    """``n`` bytes as B, KB, MB, GB or TB (decimal units, one decimal)."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


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
    orphans = _count_orphans(uri, versions, storage_options)
    if orphans is not None:
        h.orphan_data_files, h.orphan_blob_files, h.orphan_bytes = orphans
    return h


def table_files(uri: str) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    """The files under a local table's ``data/``: ``({data file name: bytes}, {sidecar folder: {blob file:
    bytes}})``. A sidecar folder ``data/<stem>/`` belongs to the data file ``data/<stem>.lance``."""
    data: dict[str, int] = {}
    blobs: dict[str, dict[str, int]] = {}
    try:
        entries = list(os.scandir(Path(uri) / "data"))
    except FileNotFoundError:
        return data, blobs
    for e in entries:
        try:
            if e.is_file(follow_symlinks=False) and e.name.endswith(".lance"):
                data[e.name] = e.stat(follow_symlinks=False).st_size
            elif e.is_dir(follow_symlinks=False):
                blobs[e.name] = {b.name: b.stat(follow_symlinks=False).st_size for b in os.scandir(e.path)
                                 if b.is_file(follow_symlinks=False) and b.name.endswith(".blob")}
        except FileNotFoundError:  # removed while we looked (maintenance)
            continue
    return data, blobs


def referenced_data_files(ds: lance.LanceDataset) -> set[str]:
    """Names of the data files one version's fragments reference (their sidecars: the folder of each stem)."""
    return {Path(f.path).name for frag in ds.get_fragments() for f in frag.data_files()}


def _count_orphans(uri: str, versions: list[int], storage_options) -> tuple[int, int, int] | None:
    """(orphan data files, orphan blob sidecars, their bytes), or None when it cannot be known."""
    if len(versions) > ORPHAN_MAX_VERSIONS:
        return None
    data, blobs = table_files(uri)
    if not data and not any(blobs.values()):
        return 0, 0, 0
    referenced: set[str] = set()
    for v in versions:
        try:
            ds = lance.dataset(uri, version=v, storage_options=storage_options)
        except Exception:  # noqa: BLE001 - a damaged version's files cannot be known: do not count
            return None
        referenced |= referenced_data_files(ds)
    orphan_data = [n for n in data if n not in referenced]
    orphan_blobs = [size for stem, files in blobs.items() if f"{stem}.lance" not in referenced
                    for size in files.values()]
    return len(orphan_data), len(orphan_blobs), sum(data[n] for n in orphan_data) + sum(orphan_blobs)
