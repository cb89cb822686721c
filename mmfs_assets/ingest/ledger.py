"""What each ingest of a drop accounted for, so files that arrive after it are noticed.

The table holds one row per video it stored, under the drop that stored it (``drop_id``, ``file_name``,
``size_bytes``). A listed file that did not become a row of its drop leaves no trace there: its video was
already in the table (from another drop, or a racing ingest), it duplicates another file of the drop, or it
could not be read. The ingest records those files, and one ``ingest`` entry per run, in a small side table
beside the table (``<table>.mmfs/ingest_ledger.lance``, :mod:`mmfs_assets.store.side_tables`: the same
storage and options as the table).

Rows and ledger together say which files of a drop the table has accounted for, by path and size. A file
listed later that is neither (copied in after ``_READY`` and the ingest, or rewritten with another size) is
*not ingested yet*: the drop sensor requests the drop's ingest again once the drop is quiet (the ingest is
idempotent: rows are by content hash, a re-run adds only new videos and records the rest), and ``mmfs
status`` lists such files. A drop with rows but no ``ingest`` entry was ingested before the ledger existed
(or its ingest failed half-way): only its rows account for its files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import pyarrow as pa

from mmfs_assets.ingest.drops import DropFile
from mmfs_assets.store import side_tables
from mmfs_loader.contract import schema as S
from mmfs_loader.contract.sql import equals, is_in
from mmfs_loader.contract.table import TableRef

LEDGER = "ingest_ledger"
INGEST, FILE = "ingest", "file"
SCHEMA = pa.schema([
    pa.field("drop_id", pa.string()),
    pa.field("kind", pa.string()),  # "ingest": one per run (size = files listed); "file": a file without a row
    pa.field("relpath", pa.string()),
    pa.field("size", pa.int64()),
    pa.field("outcome", pa.string()),  # why the file is not a row of the drop; a run's summary
    pa.field("run_id", pa.string()),
    pa.field("recorded_at", pa.timestamp("us", tz="UTC")),
])


@dataclass(frozen=True)
class NotStored:
    """A listed file that did not become a row of its drop, and why."""

    relpath: str
    size: int
    outcome: str


def record(table: TableRef, drop_id: str, files_listed: int, not_stored: list[NotStored], *,
           run_id: str = "", summary: str = "") -> None:
    """Append one ingest run's entry and the files it listed that are not rows of the drop."""
    now = datetime.now(UTC)
    rows = [{"drop_id": drop_id, "kind": INGEST, "relpath": None, "size": files_listed, "outcome": summary,
             "run_id": run_id, "recorded_at": now}]
    rows += [{"drop_id": drop_id, "kind": FILE, "relpath": f.relpath, "size": f.size, "outcome": f.outcome,
              "run_id": run_id, "recorded_at": now} for f in not_stored]
    side_tables.append(table, LEDGER, pa.Table.from_pylist(rows, schema=SCHEMA))


@dataclass
class Accounted:
    """The files of one drop the table accounts for: its rows and its ledger entries."""

    drop_id: str
    rows: int = 0
    ingests: int = 0  # ledger entries of ingest runs (0: none recorded)
    last_ingest: datetime | None = None
    known: set[tuple[str, int]] = field(default_factory=set)  # (path in the drop, size)

    @property
    def ingested(self) -> bool:
        """Whether the drop's ingest ran (recorded, or rows from before the ledger)."""
        return self.ingests > 0 or self.rows > 0

    def missing(self, files: list[DropFile]) -> list[DropFile]:
        """The listed ``files`` the table does not account for (by path and size)."""
        return [f for f in files if (f.relpath, f.size) not in self.known]


def accounted(table: TableRef, drop_ids: list[str] | None = None, ds=None) -> dict[str, Accounted]:
    """Per drop (all, or ``drop_ids``): what its rows and its ledger entries account for. Reads the drop,
    file name and size columns (through the ``drop_id`` index when drops are given) and the ledger."""
    out: dict[str, Accounted] = {}
    if ds is None:
        try:
            ds = table.dataset()
        except (ValueError, OSError) as e:
            if "not found" not in str(e).lower() and "does not exist" not in str(e).lower():
                raise
            return out
    flt = is_in(S.DROP_ID, drop_ids) if drop_ids is not None else None
    t = ds.to_table(columns=[S.DROP_ID, S.FILE_NAME, S.SIZE_BYTES], filter=flt)
    for d, name, size in zip(t[S.DROP_ID].to_pylist(), t[S.FILE_NAME].to_pylist(), t[S.SIZE_BYTES].to_pylist()):
        a = out.setdefault(d, Accounted(d))
        a.rows += 1
        a.known.add((name, size))
    led = side_tables.read(table, LEDGER, is_in("drop_id", drop_ids) if drop_ids is not None else None)
    if led is None:
        return out
    for r in led.select(["drop_id", "kind", "relpath", "size", "recorded_at"]).to_pylist():
        a = out.setdefault(r["drop_id"], Accounted(r["drop_id"]))
        if r["kind"] == INGEST:
            a.ingests += 1
            if a.last_ingest is None or r["recorded_at"] > a.last_ingest:
                a.last_ingest = r["recorded_at"]
        elif r["relpath"] is not None:
            a.known.add((r["relpath"], r["size"]))
    return out


def ingest_entries(table: TableRef, drop_id: str):
    """The ledger's rows of one drop (for tests and debugging), or None before any was recorded."""
    return side_tables.read(table, LEDGER, equals("drop_id", drop_id))
