"""The fill engine: fill one column group (a feature, or the video metadata) for one partition's rows.

1. Declare the group's columns (all-null ``add_columns``, retried; a no-op once they exist).
2. Read the partition's rows; rows already filled by the current producer are skipped (resume). A
   frames feature plans decoding from the metadata columns: rows without metadata wait for
   ``video_metadata``, rows whose metadata has an error get an error row without decoding.
3. Decoding (or probing, for the metadata group, whose input is the container) runs in spawned worker
   processes (:mod:`.pool`; NVDEC alongside when chosen, :mod:`.decoders`), a bounded window of rows
   ahead of the model. A decoder that crashes, hangs past the timeout or is killed makes that row's
   ``<group>_error``; the run goes on.
4. The model runs in this process on batches: uint8 frames go to the device once per batch and the
   feature's declared preprocessing runs there (:mod:`.preprocess`); a feature's post-processing (depth
   PNG encoding) goes back to the worker pool.
5. Each finished chunk (whole fragments) is ONE column-only ``DataReplacement`` commit with transaction
   properties, written by a background thread while the model computes the next chunk. A lost commit
   race redoes only the file write (see :mod:`mmfs_assets.table.replace`), never the model call. A
   crash loses at most the chunk in progress and the one being committed.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import deque
from collections.abc import Callable, Collection
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from mmfs_assets.engine import tasks
from mmfs_assets.engine.batches import ModelRunner
from mmfs_assets.engine.decoders import FrameSource, choose_decoder, default_workers
from mmfs_assets.engine.gpu_busy import GpuBusy
from mmfs_assets.engine.plan import rows_to_fill
from mmfs_assets.engine.pool import TaskFailed, WorkerPool
from mmfs_assets.engine.report import FillReport, check_complete
from mmfs_assets.engine.row_result import RowResult
from mmfs_assets.engine.sampling import row_producer
from mmfs_assets.engine.shm import SharedFrames
from mmfs_assets.engine.values import Result, values_table
from mmfs_assets.features.spec import Clip, Feature, LoadedModel
from mmfs_assets.ingest.probe import FrameLimits
from mmfs_assets.table import ensure_group_columns, replace_columns
from mmfs_assets.table.chunks import fragment_chunks
from mmfs_assets.table.restores import Restore, undone_by_restore
from mmfs_assets.table.retry import retry_storage
from mmfs_loader.contract import schema as S
from mmfs_loader.contract.leases import VersionLease
from mmfs_loader.contract.sql import equals
from mmfs_loader.contract.table import TableRef
from mmfs_loader.decode.video import VideoPlan

M = S.METADATA
DECODE_TIMEOUT_S = 300.0  # one sampled decode; probes (whole video) get more per byte, see _probe_timeout


def _release(value: Any) -> None:
    if isinstance(value, RowResult) and isinstance(value.frames, SharedFrames):
        value.frames.discard()


@dataclass
class FillState:
    """One fill in progress: what it computes, where it writes and what it has done (the report)."""

    table: TableRef
    feature: Feature
    model: LoadedModel
    rep: FillReport
    chunks: list[np.ndarray]  # row indices (into ``meta``/``rowids``), one list per commit
    order: list[int]  # the rows in decode order (the chunks, concatenated)
    meta: dict[str, list[Any]]  # the planning columns of the partition's rows
    modes: list[str]  # each row's sampling mode
    rowids: np.ndarray
    window: int  # rows decoded ahead of the model
    where: str  # the partition's filter
    properties: dict[str, str]  # transaction properties of every commit
    pool: WorkerPool
    storage_retry_s: float
    progress: Callable[[int, int], None] | None


def _probe_timeout(base: float, size_bytes: int) -> float:
    """A whole-video probe may take longer on a big file: ``base`` plus 1 s per MB (decoding at
    1 MB/s is far below any real decoder, so only a hang reaches this)."""
    return base + size_bytes / 1e6


def fill_feature(
    table: TableRef | str,
    drop_id: str,
    feature: Feature,
    model: LoadedModel,
    *,
    properties: dict[str, str],
    chunk_rows: int = 256,
    decode_workers: int | None = None,
    decoder: str = "cpu",
    decode_timeout: float | None = DECODE_TIMEOUT_S,
    prefetch: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    log: Callable[[str], None] | None = None,
    decode_task: Callable[..., RowResult] = tasks.decode_row,
    force: bool = False,
    storage_retry_s: float = tasks.STORAGE_RETRY_S,
    fragments: Collection[int] | None = None,
    pool: WorkerPool | None = None,
) -> FillReport:
    """Compute ``feature``'s group for the partition's rows that lack the current producer and write them.

    ``force``: recompute every row of the partition, current ones included (a forced backfill).

    ``decode_task``: the top-level function a worker runs per row (``tasks.decode_row``'s signature).
    ``storage_retry_s``: how long a worker retries a failing read of the table before deferring the row.
    ``fragments``: fill only the partition's rows in these fragments (one shard of a sharded fill,
    :mod:`mmfs_assets.engine.shards`); the report then counts the shard's rows.
    ``pool``: decode workers to use instead of starting new ones (a Ray replica keeps one pool for all its
    shards, :func:`decode_pool`). They read the version they were opened at, which their owner keeps leased
    (every row of the fill must be in it), so this fill takes no lease of its own.

    Raises :class:`FillIncomplete` after committing everything else when rows were deferred (left as they
    were, for the next run) or a rollback undid this fill's commits.
    """
    t_start = time.perf_counter()
    g = feature.group
    container = model.input == "container"
    rep = FillReport(feature.name, drop_id, model.producer, sampling="" if container else model.sampling)
    table = TableRef.of(table)
    ds = ensure_group_columns(table, g)
    rep.lance_version = ds.version
    where = equals(S.DROP_ID, drop_id)
    if not container and M.producer_column not in ds.schema.names:  # video_metadata never ran on this table
        rep.rows_in_partition = rep.rows_waiting_for_metadata = ds.count_rows(filter=where)
        rep.seconds_total = time.perf_counter() - t_start
        return rep
    rows, todo, modes = rows_to_fill(ds, feature, model, where, rep, force, fragments)
    if not len(todo):
        rep.seconds_total = time.perf_counter() - t_start
        return rep
    rowids = rows["_rowid"].to_numpy()
    frag_of = rows["_rowaddr"].to_numpy() >> 32
    meta = {c: rows[c].to_pylist() for c in rows.column_names if c not in ("_rowid", "_rowaddr")}
    chunks = [todo[c] for c in fragment_chunks(frag_of[todo], chunk_rows)]
    order = [int(i) for c in chunks for i in c]
    workers = pool.size if pool is not None else min(decode_workers or default_workers(), len(order))
    window = prefetch or fill_window(model, workers)
    choice = choose_decoder("cpu" if container else decoder, model.device)
    rep.decoder, rep.decoder_reason, rep.decode_workers = choice.name, choice.reason, workers
    if log:
        log(f"{feature.name}: decoding with {choice.name} ({choice.reason}), {workers} worker processes")
    lease = VersionLease(table, ds.version, feature.name) if pool is None else contextlib.nullcontext()
    with lease:  # maintenance keeps the version the workers read
        own = pool is None
        workers_pool = pool or decode_pool(table, ds.version, feature, workers, window, decode_timeout, storage_retry_s)
        state = FillState(table, feature, model, rep, chunks, order, meta, modes, rowids, window, where, properties,
                          workers_pool, storage_retry_s, progress)
        undone = _run(state, ds, own, choice, decode_task)
    rep.seconds_total = time.perf_counter() - t_start
    check_complete(rep, undone)
    return rep


def fill_window(model: LoadedModel, workers: int) -> int:
    """Rows decoded ahead of the model: two batches, and enough to keep every worker busy."""
    return max(2 * model.batch_size, 4 * workers)


def decode_pool(table: TableRef, version: int, feature: Feature, workers: int, window: int,
                decode_timeout: float | None = DECODE_TIMEOUT_S,
                storage_retry_s: float = tasks.STORAGE_RETRY_S) -> WorkerPool:
    """Decode worker processes reading ``version`` of the table."""
    return WorkerPool(
        workers, initializer=tasks.open_table, initargs=(table, version, storage_retry_s),
        timeout=decode_timeout, depth=max(2, math.ceil(window / workers)), name=f"mmfs-{feature.name}",
    )


def _run(st: FillState, ds, own: bool, choice, decode_task: Callable[..., RowResult]) -> Restore | None:
    """Decode, compute and commit the fill's chunks; the rollback that undid any of its commits, if one did.
    ``own``: the pool was started for this fill (closed at the end; else only its leftover results go)."""
    pool, model, rep, feature, table = st.pool, st.model, st.rep, st.feature, st.table
    decode_timeout = pool.timeout
    restarts = pool.restarts
    nvdec = None
    committer = ThreadPoolExecutor(1, thread_name_prefix=f"commit-{feature.name}")
    try:
        if choice.nvdec:
            from mmfs_loader.decode.nvdec import NvdecLane

            nvdec = NvdecLane(ds)
        source = FrameSource(pool, nvdec, decode_timeout, decode_task)
        with GpuBusy(model.device) as busy:
            _loop(st, source, committer)
        rep.gpu_busy_percent = busy.percent
        rep.nvdec_rows, rep.nvdec_fallbacks = source.nvdec_rows, source.nvdec_fallbacks
        return undone_by_restore(table, rep.commit_versions)  # checked while the lease still says "running"
    finally:
        committer.shutdown(wait=True)
        rep.worker_restarts = pool.restarts - restarts
        pool.drop_results(_release)  # a fill that stopped early leaves no frames in shared memory
        if own:
            pool.close()
        if nvdec is not None:
            nvdec.close()


def _loop(st: FillState, source: FrameSource, committer: ThreadPoolExecutor) -> None:
    table, feature, model, rep, pool, where, properties = st.table, st.feature, st.model, st.rep, st.pool, st.where, st.properties
    chunks, order, meta, modes, rowids, window = st.chunks, st.order, st.meta, st.modes, st.rowids, st.window
    progress, storage_retry_s = st.progress, st.storage_retry_s
    g = feature.group
    container = model.input == "container"
    run_model = ModelRunner(model, g.value_columns)
    max_corrupt = int(model.details.get("max_corrupt_frames", 0)) if container else 0
    limits = FrameLimits.from_details(model.details) if container else None
    timeout = pool.timeout
    handles: deque = deque()
    submitted = 0

    def top_up() -> None:
        nonlocal submitted
        while submitted < len(order) and len(handles) < window:
            i = order[submitted]
            rowid = int(rowids[i])
            if container:
                size = int(meta[S.SIZE_BYTES][i] or 0)
                to = None if timeout is None else _probe_timeout(timeout, size)
                handles.append((i, pool.submit(tasks.probe_row, rowid, size, max_corrupt, limits, timeout=to)))
            elif meta[M.error_column][i]:
                handles.append((i, None))
            else:
                plan = VideoPlan.from_row({c: meta[c][i] for c in meta})
                times = [float(t) for t in plan.targets(model.frames.count)]
                handles.append((i, source.submit(rowid, plan, times, model.frames.short_side, modes[i])))
                rep.rows_sampled_keyframe += modes[i] == "keyframe"
                rep.rows_sampled_exact += modes[i] == "exact"
            submitted += 1

    last_commit: Future | None = None
    done = 0

    def wait_commit() -> None:
        nonlocal last_commit, done
        if last_commit is None:
            return
        t = time.perf_counter()
        out, n_ids, seconds = last_commit.result()
        rep.seconds_commit_wait += time.perf_counter() - t
        rep.seconds_write += seconds
        rep.commits += 1
        rep.commit_retries += out.attempts - 1
        rep.lance_version = out.version
        rep.commit_versions.append(out.version)
        done += n_ids
        last_commit = None
        if progress:
            progress(done, len(order))

    def commit(values: pa.Table, n_chunk: int, n_ids: int):
        t = time.perf_counter()
        props = {**properties, "mmfs.producer": model.producer, "mmfs.chunk": f"{n_chunk}/{len(chunks)}"}

        def storage_retry(e: BaseException) -> None:
            rep.storage_retries += 1

        out = retry_storage(lambda: replace_columns(table, values, locate_filter=where, properties=props),
                            budget_s=storage_retry_s, on_retry=storage_retry)  # an outage waits, then commits
        return out, n_ids, time.perf_counter() - t

    def flush(batch: list[Clip], results: dict[int, Result], post: dict[int, int]) -> None:
        """Run the model on ``batch``: values (or errors) into ``results``, post-processing tasks into ``post``."""
        t = time.perf_counter()
        for clip, r in zip(batch, run_model(batch)):
            if isinstance(r, str):
                results[clip.rowid] = (None, r)
            elif model.postprocess is not None:  # tensors go as numpy: workers do not import torch
                r = {k: (v.numpy() if hasattr(v, "numpy") else v) for k, v in r.items()}
                post[clip.rowid] = pool.submit(tasks.call, model.postprocess, r)
            else:
                results[clip.rowid] = (r, None)
        rep.seconds_compute += time.perf_counter() - t
        batch.clear()

    def defer(rowid: int, reason: str) -> None:
        """Not the row's failure: leave the row as it is (not written), for the next run."""
        deferred.add(rowid)
        rep.rows_deferred += 1
        if reason not in rep.deferred_reasons:
            rep.deferred_reasons.append(reason)

    for n_chunk, chunk in enumerate(chunks, start=1):
        deferred: set[int] = set()
        results: dict[int, Result] = {}
        post: dict[int, int] = {}
        batch: list[Clip] = []

        for _ in chunk:
            top_up()
            i, h = handles.popleft()
            rowid = int(rowids[i])
            if h is None:
                results[rowid] = (None, f"video has a metadata error: {meta[M.error_column][i]}")
                continue
            t = time.perf_counter()
            out = pool.result(h) if container else source.result(h)
            rep.seconds_decode_wait += time.perf_counter() - t
            if isinstance(out, TaskFailed) and out.infra or isinstance(out, RowResult) and out.deferred:
                defer(rowid, out.message if isinstance(out, TaskFailed) else str(out.deferred))
                continue
            if isinstance(out, TaskFailed):
                results[rowid] = ({} if container else None, f"decode failed: {out.message}")
                continue
            rep.seconds_decode += out.seconds
            rep.storage_retries += out.storage_retries
            if container:
                results[rowid] = (out.values, out.error)
                rep.frames_decoded += out.frames_decoded
                continue
            if out.error:
                results[rowid] = (None, out.error)
                continue
            frames = out.frames
            k = int(frames.shape[0])
            rep.frames_decoded += out.frames_decoded
            rep.frames_taken += k
            rep.amplification_per_row.append(out.frames_decoded / max(1, k))
            rep.rows_with_repeated_frames += len(np.unique(out.timestamps)) < k
            if model.preprocess is None and hasattr(frames, "cpu"):
                frames = frames.cpu().numpy()
            batch.append(Clip(rowid, frames, np.asarray(out.timestamps, dtype=np.float64)))
            if len(batch) >= model.batch_size:
                top_up()
                flush(batch, results, post)
        if batch:
            top_up()
            flush(batch, results, post)
        t = time.perf_counter()
        for rowid, tid in post.items():
            v = pool.result(tid)
            if isinstance(v, TaskFailed) and v.infra:
                defer(rowid, v.message)
            else:
                results[rowid] = (None, f"post-processing failed: {v.message}") if isinstance(v, TaskFailed) else (v, None)
        rep.seconds_postprocess_wait += time.perf_counter() - t
        ids = [int(rowids[i]) for i in chunk if int(rowids[i]) not in deferred]
        if not ids:
            continue
        producers = {int(rowids[i]): row_producer(model.producer, modes[i]) for i in chunk}
        values = values_table(feature, producers, ids, results)
        errors = sum(results[r][1] is not None for r in ids)
        rep.rows_errored += errors
        rep.rows_computed += len(ids) - errors
        wait_commit()  # one commit in flight: a failed commit stops the fill at the next chunk
        last_commit = committer.submit(commit, values, n_chunk, len(ids))
    wait_commit()
