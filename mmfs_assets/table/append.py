"""Creating the table on first use and appending ingest rows.

A write that fails because the table's file system is full says so (:class:`NoSpaceError`): Lance's own
error then names whatever step noticed first (a short blob sidecar: "Dedicated blob sidecar ... has size
6901760, expected 7000000"), not the cause. The files written before the failure are orphans: harmless to
readers, counted by ``mmfs status`` and deleted by ``mmfs maintain``.
"""

from __future__ import annotations

import errno
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import lance
import pyarrow as pa

from mmfs_assets.table.retry import retry_commit
from mmfs_loader.contract.health import human_bytes
from mmfs_loader.contract.schema import INGEST_SCHEMA
from mmfs_loader.contract.table import TableRef

# Rows per fragment written by ingest; the feature fill's default chunk is the same, so one fill
# commit covers whole fragments and writes each fragment's new column file exactly once.
FRAGMENT_ROWS = 256


#: Free space under which a failed write to a local table is taken for a full disk, whatever Lance's message:
#: a write that ran out of space leaves (next to) nothing free, its partial files stay until maintenance.
NEARLY_FULL_BYTES = 16 << 20
_NO_SPACE_WORDS = ("no space left on device", "os error 28", "enospc", "disk quota exceeded", "os error 122")
_TOO_LARGE_WORDS = ("file too large", "os error 27", "efbig")
_RUST_LOCATION = re.compile(r",?\s*/\S+?\.rs:\d+:\d+")  # the library's build paths in Lance's messages


class NoSpaceError(OSError):
    """A write to the table failed because its file system is full (or the quota is used up)."""

    def __init__(self, path: str, free: int, detail: str = ""):
        super().__init__(
            errno.ENOSPC,
            f"no space left on device on {path} ({human_bytes(free)} free): free space, then re-run; the partial "
            "files are orphans that `mmfs maintain` removes (once they are an hour old)",
        )
        self.path = path
        self.free = free
        self.detail = detail  # Lance's own first line

    def __str__(self) -> str:
        return str(self.strerror)


class FileTooLargeError(NoSpaceError):
    """A write to the table failed with EFBIG: a file size limit (``ulimit -f``) or the file system's maximum."""

    def __init__(self, path: str, free: int, detail: str = ""):
        OSError.__init__(
            self, errno.EFBIG,
            f"file too large on {path}: a file size limit (`ulimit -f`) or the file system's maximum file size was "
            "reached: raise the limit, then re-run; the partial files are orphans that `mmfs maintain` removes (once "
            "they are an hour old)",
        )
        self.path = path
        self.free = free
        self.detail = detail


def _local_dir(uri: str) -> str | None:
    """The nearest existing folder of a local table URI (the table itself once it exists), else None."""
    if "://" in uri and not uri.startswith("file://"):
        return None
    p = Path(uri.removeprefix("file://")).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return str(p)


def no_space(table: TableRef, exc: BaseException) -> NoSpaceError | None:
    """``exc`` as a :class:`NoSpaceError` when the table's file system is out of space (or a file size limit was
    hit: :class:`FileTooLargeError`), else None.

    Told by the error (ENOSPC, EDQUOT, EFBIG, their words in Lance's message) or, for a local table, by the free
    space left after the failure (Lance often reports the short write, not its cause)."""
    if isinstance(exc, NoSpaceError):
        return exc
    if not isinstance(exc, OSError) and "LanceError(IO)" not in str(exc):
        return None
    text = str(exc).lower()
    code = getattr(exc, "errno", None)
    first = _RUST_LOCATION.sub("", next((ln for ln in str(exc).splitlines() if ln.strip()), "")).strip()
    where = _local_dir(table.uri)
    said = code in (errno.ENOSPC, errno.EDQUOT) or any(w in text for w in _NO_SPACE_WORDS)
    if not said and (code == errno.EFBIG or any(w in text for w in _TOO_LARGE_WORDS)):
        return FileTooLargeError(where or table.uri, 0, first)
    free = None
    if where is not None:
        try:
            free = shutil.disk_usage(where).free
        except OSError:
            free = None
    if not said and (free is None or free >= NEARLY_FULL_BYTES):
        return None
    return NoSpaceError(where or table.uri, free or 0, first)


@contextmanager
def space_guard(table: TableRef) -> Iterator[None]:
    """Turn a failed table write on a full file system into :class:`NoSpaceError`; other errors pass."""
    try:
        yield
    except Exception as e:
        err = no_space(table, e)
        if err is None or err is e:
            raise
        raise err from e


def _exists(table: TableRef) -> lance.LanceDataset | None:
    try:
        return table.dataset()
    except (ValueError, OSError) as e:
        if "not found" in str(e).lower() or "does not exist" in str(e).lower():
            return None
        raise


class TableLocationError(ValueError):
    """The table URI points at something that is not a Lance table and must not become one."""


def check_location(uri: str) -> None:
    """Refuse to create the table inside a local folder that already holds other files."""
    if "://" in uri:
        return
    p = Path(uri)
    if p.exists() and not p.is_dir():
        raise TableLocationError(f"MMFS_TABLE_URI={uri} is a file, not a Lance table folder")
    if p.is_dir() and not (p / "_versions").is_dir() and any(p.iterdir()):
        raise TableLocationError(
            f"MMFS_TABLE_URI={uri} is a non-empty folder that is not a Lance table: refusing to create "
            "the table inside it (point MMFS_TABLE_URI at a new path, e.g. .../videos.lance)"
        )


def open_or_create(table: TableRef | str) -> lance.LanceDataset:
    """Open the table, creating it empty (with stable row ids) if it does not exist yet.

    Two processes may race to create it: the loser sees "already exists" and opens the winner's table.
    """
    table = TableRef.of(table)
    ds = _exists(table)
    if ds is not None:
        return ds
    check_location(table.uri)
    try:
        with space_guard(table):
            return lance.write_dataset(
                INGEST_SCHEMA.empty_table(),
                table.uri,
                mode="create",
                enable_stable_row_ids=True,
                storage_options=table.options,
                transaction_properties={"mmfs.op": "create"},
            )
    except NoSpaceError:
        raise
    except OSError as e:
        if "already exists" not in str(e).lower():
            raise
        return table.dataset()


def append_rows(
    table: TableRef | str,
    rows: pa.Table,
    properties: dict[str, str],
    fragment_rows: int = FRAGMENT_ROWS,
    on_retry: Callable[[int, BaseException], None] | None = None,
) -> lance.LanceDataset:
    """Append ingest rows in one commit (new fragments only; nothing existing is rewritten).

    Fragments hold at most ``fragment_rows`` rows: a feature fill commits whole fragments, so the
    fragment size is both its unit of crash loss and of rewrite (a fill rewrites its columns' file of
    each fragment it touches, once).

    The rows carry only the ingest columns; feature columns of the new rows read as null until filled.
    A full file system raises :class:`NoSpaceError` (nothing is committed; the files written are orphans).
    """
    if rows.schema != INGEST_SCHEMA:
        rows = rows.select(INGEST_SCHEMA.names).cast(INGEST_SCHEMA)
    table = TableRef.of(table)
    props = {"mmfs.op": "append", **properties}
    with space_guard(table):
        return retry_commit(lambda _: lance.write_dataset(
            rows,
            table.uri,
            mode="append",
            storage_options=table.options,
            transaction_properties=props,
            allow_external_blob_outside_bases=True,
            max_rows_per_file=fragment_rows,
        ), on_retry=on_retry)
