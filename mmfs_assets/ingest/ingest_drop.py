"""Ingesting one drop: list its files, read each once, append the videos the table does not hold yet.

One row per unique video: the id is the SHA-256 of the bytes stored for it. Each file is opened once,
without following links (:mod:`mmfs_assets.ingest.safe_open`), hashed while it is read, and the bytes of
that same read are what goes into the blob column, so neither a re-pointed link nor a file rewritten
mid-ingest can store something else than what was hashed.

Memory is bounded: rows are appended in chunks of at most ``chunk_bytes``; a file larger than
``inline_max_bytes`` is only hashed (streaming) and stored as a pointer to its real path in the drop
(``video_storage='pointer'`` on that row). Duplicates inside a drop keep a real file over a symlink, then
the first path in sorted order. Files already in the table (from any drop) are skipped, and after every
commit a deterministic dedup keeps only the first-committed row of each id (:mod:`mmfs_assets.table.dedup`),
so two ingests that race (in two Dagster instances, or without any pool) still leave one row per video.

A file that cannot be read (permissions, a link that appeared after listing, changed while read) becomes a
skip entry with its reason; it never fails the drop.

Every run ends by recording, in the ingest ledger (:mod:`mmfs_assets.ingest.ledger`), the listed files that
did not become rows of the drop (already in the table, duplicates, skipped): with the rows, they are what the
table accounts for, so a file copied into the drop after its ingest is noticed (the sensor re-runs the ingest,
``mmfs status`` lists it). A table write that fails on a full disk raises
:class:`~mmfs_assets.table.append.NoSpaceError`, whichever write noticed it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from mmfs_assets.ingest.drop_source import Drop, LocalDrop
from mmfs_assets.ingest.drops import DropFile, SkippedFile
from mmfs_assets.ingest.ledger import NotStored, accounted
from mmfs_assets.ingest.ledger import record as record_ledger
from mmfs_assets.ingest.rows import ChunkBuffer, Pending, ingest_rows, is_utf8
from mmfs_assets.table import append_rows, open_or_create
from mmfs_assets.table.append import FRAGMENT_ROWS, space_guard
from mmfs_assets.table.dedup import dedup_ids
from mmfs_assets.table.indices import ensure_scalar_indices
from mmfs_loader.contract import schema as S
from mmfs_loader.contract.sql import is_in
from mmfs_loader.contract.table import TableRef

ID_LOOKUP_BATCH = 512  # above this many ids, one scan of the id column beats repeated IN lookups
INLINE_MAX_BYTES = 2 << 30  # larger files are stored as pointers (setting MMFS_INLINE_MAX_BYTES)
NOT_UTF8_POINTER = ("file name is not valid UTF-8, so it cannot be stored as a pointer: rename it "
                    "(or raise MMFS_INLINE_MAX_BYTES)")


@dataclass
class IngestReport:
    drop_id: str
    files: int = 0
    bytes_hashed: int = 0
    new_rows: int = 0
    new_bytes: int = 0
    already_in_table: int = 0
    duplicates_in_drop: int = 0
    duplicates_removed: int = 0  # rows of a racing ingest of the same videos, removed by the post-commit dedup
    pointer_rows: int = 0  # files over inline_max_bytes stored as pointers
    skipped: list[SkippedFile] = field(default_factory=list)
    commits: list[int] = field(default_factory=list)
    commit_retries: int = 0  # appends that lost a commit race to another writer and were redone
    lance_version: int | None = None
    seconds_hashing: float = 0.0
    seconds_writing: float = 0.0
    new_ids: list[str] = field(default_factory=list)


Progress = Callable[[str, int, int], None]  # (phase, done, total)


def _existing_ids(ds, ids: list[str]) -> set[str]:
    """Which of ``ids`` the table holds: a few filtered lookups for a small drop, else one projected scan."""
    if len(ids) > ID_LOOKUP_BATCH:
        return set(ids) & set(ds.to_table(columns=[S.ID])[S.ID].to_pylist())
    found: set[str] = set()
    for i in range(0, len(ids), ID_LOOKUP_BATCH):
        batch = ids[i : i + ID_LOOKUP_BATCH]
        t = ds.to_table(columns=[S.ID], filter=is_in(S.ID, batch))
        found.update(t[S.ID].to_pylist())
    return found


def ingest_drop(
    drop_path: Path | Drop,
    drop_id: str,
    table: TableRef | str,
    *,
    properties: dict[str, str],
    video_storage: str = "inline",
    chunk_bytes: int = 256 << 20,
    inline_max_bytes: int = INLINE_MAX_BYTES,
    fragment_rows: int = FRAGMENT_ROWS,
    progress: Progress | None = None,
    before_read: Callable[[DropFile], None] | None = None,
) -> IngestReport:
    """Append the drop's new videos to the table and report what happened.

    ``before_read(file)`` is called just before each file is opened: a test hook that lets a race (a link
    re-pointed, a folder swapped) happen deterministically between the listing and the read.

    ``drop_path`` is a drop folder or an opened drop of any source (:mod:`mmfs_assets.ingest.drop_source`,
    e.g. a prefix in a bucket, whose pointer rows then hold ``s3://`` URIs).
    """
    if video_storage not in ("inline", "pointer"):
        raise ValueError(f"video_storage must be 'inline' or 'pointer', not {video_storage!r}")
    drop = LocalDrop(Path(drop_path), drop_id) if isinstance(drop_path, (str, Path)) else drop_path
    rep = IngestReport(drop_id)
    files, rep.skipped = drop.list_files()
    rep.files = len(files)
    # duplicates keep the real file over a link to it, then the first path in sorted order
    files.sort(key=lambda f: (f.is_link, f.relpath))
    total = sum(f.size for f in files)
    table = TableRef.of(table)
    ds = open_or_create(table)
    rep.lance_version = ds.version
    before = accounted(table, [drop_id], ds).get(drop_id)  # its rows and ledger entries from earlier ingests
    known_before = before.known if before else set()
    seen: set[str] = set()
    chunk = ChunkBuffer(chunk_bytes)
    pending: list[Pending] = []
    pending_bytes = 0
    known: list[str] = []  # ids already in the table: a run killed between its commit and its dedup left them
    not_stored: list[NotStored] = []  # listed files that do not become rows of this drop (the ingest ledger)
    hashed = 0
    t_write = 0.0
    t0 = time.perf_counter()

    def count_retry(_n: int, _e: BaseException) -> None:
        rep.commit_retries += 1

    def flush() -> None:
        nonlocal pending, pending_bytes, t_write
        if not pending:
            return
        t = time.perf_counter()
        existing = _existing_ids(ds, [p.read.sha256 for p in pending])
        rep.already_in_table += len(existing)
        known.extend(existing)
        todo = [p for p in pending if p.read.sha256 not in existing]
        not_stored.extend(NotStored(p.file.relpath, p.file.size, "already in the table")
                          for p in pending if p.read.sha256 in existing)
        if todo:
            stamp = datetime.now(UTC)  # identifies this chunk's rows among those the dedup removes
            rows = ingest_rows(drop_id, todo, chunk.contents(todo), now=stamp)
            out = append_rows(table, rows, properties, fragment_rows=fragment_rows, on_retry=count_retry)
            del rows
            rep.commits.append(out.version)
            rep.lance_version = out.version
            with space_guard(table):
                removed = dedup_ids(table, [p.read.sha256 for p in todo])
            rep.duplicates_removed += len(removed)
            # rows of this chunk that lost to another ingest's earlier commit are not new after all
            lost = {r.id for r in removed if r.drop_id == drop_id and r.ingested_at == stamp}
            kept = [p for p in todo if p.read.sha256 not in lost]
            not_stored.extend(NotStored(p.file.relpath, p.file.size, "already in the table (a racing ingest)")
                              for p in todo if p.read.sha256 in lost)
            rep.new_rows += len(kept)
            rep.new_bytes += sum(p.read.size for p in kept)
            rep.pointer_rows += sum(p.storage == "pointer" for p in kept)
            rep.new_ids.extend(p.read.sha256 for p in kept)
            if progress:
                progress("write", rep.new_bytes, total)
        pending, pending_bytes = [], 0
        chunk.reset()  # the append has written the bytes: the buffer is reused for the next chunk
        t_write += time.perf_counter() - t

    def on_bytes(n: int) -> None:
        nonlocal hashed
        hashed += n
        if progress:
            progress("hash", hashed, total)

    with drop.reader() as reader:
        for f in files:
            if before_read:
                before_read(f)
            keep = video_storage == "inline" and f.size <= inline_max_bytes
            if not keep and not is_utf8(f.parts):  # checked before hashing a (large) file for nothing
                rep.skipped.append(SkippedFile(f.relpath, NOT_UTF8_POINTER))
                not_stored.append(NotStored(f.relpath, f.size, f"skipped: {NOT_UTF8_POINTER}"))
                continue
            if keep and pending and pending_bytes + f.size > chunk_bytes:
                flush()  # bounded memory: the chunk goes out before this file's bytes come in
            mark = chunk.used
            try:
                r = reader.read(f, keep_bytes=keep, on_bytes=on_bytes, alloc=chunk.alloc,
                                keep_max=inline_max_bytes)
            except (OSError, MemoryError) as e:
                chunk.rollback(mark)
                reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e) or type(e).__name__
                rep.skipped.append(SkippedFile(f.relpath, f"cannot be read: {reason}"))
                not_stored.append(NotStored(f.relpath, f.size, f"skipped: cannot be read: {reason}"))
                continue
            rep.bytes_hashed += r.size
            storage = "inline" if r.data is not None else "pointer"
            if storage == "pointer" and not is_utf8(f.parts):
                chunk.rollback(mark)
                rep.skipped.append(SkippedFile(f.relpath, NOT_UTF8_POINTER))
                not_stored.append(NotStored(f.relpath, f.size, f"skipped: {NOT_UTF8_POINTER}"))
                continue
            if r.sha256 in seen:
                rep.duplicates_in_drop += 1
                not_stored.append(NotStored(f.relpath, f.size, "duplicate of another file of the drop"))
                chunk.rollback(mark)
                continue
            seen.add(r.sha256)
            pending.append(Pending(f, r, drop.file_uri(f), storage))
            pending_bytes += r.size if storage == "inline" else 0
            if pending_bytes >= chunk_bytes:
                flush()
        flush()
    with space_guard(table):  # a full disk says so, whichever write notices it
        # a run killed between its append and its dedup may have left a second row for a video of this drop
        rep.duplicates_removed += len(dedup_ids(table, known))
        ensure_scalar_indices(table)  # new fragments: fold them into the drop_id / id lookup indices
        not_stored = [n for n in not_stored if (n.relpath, n.size) not in known_before]  # accounted for already
        record_ledger(table, drop_id, rep.files, not_stored, run_id=properties.get("mmfs.run_id", ""),
                      summary=f"{rep.files} file(s) listed, {rep.new_rows} new row(s)")
    if progress:  # duplicates, rows already in the table and skipped files are never written: bars end full
        progress("hash", hashed, hashed)
        progress("write", rep.new_bytes, rep.new_bytes)
    rep.skipped.sort(key=lambda s: s.relpath)
    elapsed = time.perf_counter() - t0
    rep.seconds_writing = t_write
    rep.seconds_hashing = elapsed - t_write
    return rep

