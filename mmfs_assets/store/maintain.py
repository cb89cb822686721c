"""Maintenance: indices, compaction of small fragments, version retention, orphan files.

1. **Indices**: the ``drop_id``/``id`` lookup indices and (while no fill runs) the search indices are
   created when missing and new or refilled fragments are folded in (:mod:`mmfs_assets.table.indices`).
2. **Compaction** of small fragments (fewer than the ingest's fragment size, e.g. the tail of a small drop
   or fragments with deleted rows), only while no ingest or fill is writing (:mod:`mmfs_assets.instance.writers`). Fragments
   holding more than ``blob_limit`` bytes of inline video are left out: compaction copies blob payloads,
   and rewriting gigabytes to merge a few rows is not worth it. A compaction that still races a writer
   loses its commit (Lance refuses it) and is retried at the next run; the writer never loses data.
3. **Retention**: versions older than ``retention`` are removed, never a tagged one (a snapshot, or a version
   a running fill or reader holds a lease on: :mod:`mmfs_loader.contract.leases`) and never the latest; their
   commit records go to the lineage archive first. Leases whose holder died (expired) are removed first.
4. **Orphans**: data files no version references (left by a writer killed between its file write and its
   commit) are deleted once older than ``orphan_grace`` and while no writer is active (a file younger than
   that may belong to a commit in flight). Local tables only; on object stores Lance's own rule applies
   (unreferenced files older than 7 days go with the retention cleanup).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import lance
import numpy as np
import pyarrow.compute as pc

from mmfs_assets.store.lineage import archive
from mmfs_assets.table.append import FRAGMENT_ROWS
from mmfs_assets.table.indices import IndexReport, ensure_scalar_indices, ensure_search_indices
from mmfs_assets.table.retry import is_conflict
from mmfs_loader.contract import leases
from mmfs_loader.contract import schema as S
from mmfs_loader.contract.table import TableRef, known_tags

BLOB_LIMIT = 256 << 20  # fragments with more inline video than this are never compacted
ORPHAN_GRACE = timedelta(hours=1)
RETENTION = timedelta(days=7)


@dataclass
class MaintenanceReport:
    dry_run: bool
    version_before: int
    version_after: int = 0
    indices: IndexReport | None = None
    fragments_compacted: int = 0
    fragments_written: int = 0
    blob_fragments_kept: int = 0
    versions_removed: int = 0
    bytes_removed: int = 0
    orphans_removed: int = 0
    orphan_bytes: int = 0
    lineage_archived: int = 0
    leases_removed: int = 0  # leases of fills that died without releasing them (expired)
    skipped: list[str] = field(default_factory=list)

    def record(self) -> dict:
        d = dict(self.__dict__)
        d["indices"] = self.indices.__dict__ if self.indices else None
        return d


def _blob_heavy(ds: lance.LanceDataset, limit: int) -> list[int]:
    """Fragments holding more than ``limit`` bytes of inline video."""
    t = ds.to_table(columns=[S.SIZE_BYTES], filter=f"{S.VIDEO_STORAGE} = 'inline'", with_row_address=True)
    if t.num_rows == 0:
        return []
    frag = pc.shift_right(t["_rowaddr"], 32).to_numpy()
    size = t[S.SIZE_BYTES].fill_null(0).to_numpy()
    ids, inverse = np.unique(frag, return_inverse=True)
    sums = np.bincount(inverse, weights=size)
    return [int(f) for f, s in zip(ids, sums) if s > limit]


def compact(table: TableRef, rep: MaintenanceReport, *, blob_limit: int, target_rows: int) -> None:
    from lance.optimize import Compaction

    ds = table.dataset()
    heavy = _blob_heavy(ds, blob_limit)
    opts: dict = {"target_rows_per_fragment": target_rows, "excluded_fragment_ids": heavy, "materialize_deletions": True}
    plan = Compaction.plan(ds, opts)  # type: ignore[arg-type]
    rep.blob_fragments_kept = len(heavy)
    rep.fragments_compacted = sum(len(t.fragments) for t in plan.tasks)
    if rep.dry_run or not plan.tasks:
        return
    try:
        metrics = ds.optimize.compact_files(**opts)
    except OSError as e:
        if not is_conflict(e):
            raise
        rep.skipped.append("compaction lost a commit race with a writer: nothing changed, the next run retries")
        rep.fragments_compacted = 0
        return
    rep.fragments_compacted = metrics.fragments_removed
    rep.fragments_written = metrics.fragments_added


def _expired(ds: lance.LanceDataset, retention: timedelta, tagged: set[int]) -> list[int]:
    now = time.time()
    out = []
    for v in ds.versions():
        ts = v.get("timestamp")
        age = now - ts.timestamp() if isinstance(ts, datetime) else 0
        if v["version"] != ds.version and v["version"] not in tagged and age > retention.total_seconds():
            out.append(int(v["version"]))
    return out


def retain(table: TableRef, rep: MaintenanceReport, retention: timedelta) -> None:
    if not rep.dry_run:
        rep.leases_removed = leases.remove_expired(table)
    ds = table.dataset()
    tagged = set(known_tags(table.uri, table.options, include_leases=True).values())  # snapshots, running fills
    expired = _expired(ds, retention, tagged)
    if not expired:
        return
    if rep.dry_run:
        e = ds.explain_cleanup_old_versions(older_than=retention, error_if_tagged_old_versions=False)
        rep.versions_removed, rep.bytes_removed = e.stats.old_versions, e.stats.bytes_removed
        return
    rep.lineage_archived = archive(table, expired)
    stats = ds.cleanup_old_versions(older_than=retention, error_if_tagged_old_versions=False)
    rep.versions_removed, rep.bytes_removed = stats.old_versions, stats.bytes_removed


def remove_orphans(table: TableRef, rep: MaintenanceReport, grace: timedelta) -> None:
    if "://" in table.uri:
        rep.skipped.append("orphan files on object stores: left to Lance's 7-day rule")
        return
    # Lance lists the files no version references, blob v2 sidecars included (``data/<stem>/<n>.blob``, kind
    # "data": the leftovers of a write that failed on a full disk, which can be most of the disk).
    from mmfs_loader.contract.health import referenced_data_files

    ds = table.dataset()
    live = referenced_data_files(ds)  # belt and braces: never a file (or sidecar) of the latest version
    e = ds.explain_cleanup_old_versions(older_than=timedelta(days=36500), delete_unverified=True,
                                        error_if_tagged_old_versions=False, include_files=True, max_files=100_000)
    cutoff = time.time() - grace.total_seconds()
    emptied: set[str] = set()
    young, young_bytes = 0, 0
    for c in e.candidate_files:
        if not c.unverified or c.kind not in ("data", "deletion"):
            continue
        path = c.path if os.path.isabs(c.path) else "/" + c.path
        parent = os.path.dirname(path)
        sidecar = c.kind == "data" and path.endswith(".blob") and os.path.basename(os.path.dirname(parent)) == "data"
        if os.path.basename(path) in live or (sidecar and f"{os.path.basename(parent)}.lance" in live):
            continue
        try:
            st = os.stat(path)
        except FileNotFoundError:
            continue
        if st.st_mtime > cutoff:
            young, young_bytes = young + 1, young_bytes + st.st_size
            continue
        rep.orphans_removed += 1
        rep.orphan_bytes += st.st_size
        if not rep.dry_run:
            os.remove(path)
            if sidecar:
                emptied.add(parent)
    for folder in emptied:  # a sidecar folder whose blobs all went: the folder goes too (never a non-empty one)
        try:
            os.rmdir(folder)
        except OSError:
            pass
    if young:
        rep.skipped.append(f"{young} unreferenced file(s), {young_bytes / 1e6:.1f} MB, younger than {grace}: kept "
                           "(a commit in flight may still reference them); a run after that removes them")


def maintain(
    table: TableRef | str,
    *,
    dry_run: bool = False,
    writers: Callable[[], list[str]] = list,
    retention: timedelta = RETENTION,
    orphan_grace: timedelta = ORPHAN_GRACE,
    blob_limit: int = BLOB_LIMIT,
    target_rows: int = FRAGMENT_ROWS,
    vector_min_rows: int | None = None,
) -> MaintenanceReport:
    """One maintenance pass; ``writers()`` names the runs writing the table (compaction and orphan removal
    wait for none)."""
    table = TableRef.of(table)
    rep = MaintenanceReport(dry_run, table.dataset().version)
    busy = writers() + [lease.describe() for lease in leases.running_fills(table)]  # fills outside this instance too
    if not dry_run:
        rep.indices = ensure_scalar_indices(table)  # drop_id / id: no fill writes them, no race
        if busy:  # an index build over a column a fill is writing loses (or makes the fill lose) the commit race
            rep.skipped.append("search indices: a fill may be writing the indexed columns; the search_indices "
                               "asset and the next maintenance bring them up to date")
        else:
            extra = {"vector_min_rows": vector_min_rows} if vector_min_rows is not None else {}
            search = ensure_search_indices(table, **extra)
            rep.indices.created += search.created
            rep.indices.optimized = sorted(set(rep.indices.optimized) | set(search.optimized))
            rep.indices.skipped = search.skipped
    if busy:
        rep.skipped.append("compaction and orphan removal: the table is being written by " + "; ".join(busy[:5]))
    else:
        compact(table, rep, blob_limit=blob_limit, target_rows=target_rows)
    retain(table, rep, retention)
    if not busy:
        remove_orphans(table, rep, orphan_grace)
    rep.version_after = table.dataset().version
    return rep
