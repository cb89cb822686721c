"""The feature engine: fill one feature's column group for one partition's rows.

1. Declare the group's columns (all-null ``add_columns``, retried; a no-op once they exist).
2. Read the partition's rows with the metadata columns that plan the decoding and the group's
   producer; rows already filled by the current producer are skipped (resume), rows without metadata
   wait for ``video_metadata``, rows whose metadata has an error get an error row without decoding.
3. Group the rest into chunks of whole fragments. Background threads decode the needed frames of the
   next rows (PyAV releases the GIL) while the model computes batches on this thread, so decoding
   hides behind compute.
4. Each finished chunk is written as ONE column-only ``DataReplacement`` commit carrying transaction
   properties. A lost commit race redoes only the file write (see :mod:`mmfs_assets.table.replace`),
   never the model call. A crash loses at most the chunk in progress.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import lance
import numpy as np
import pyarrow as pa

from mmfs_assets.features.frames import DecodeError, VideoPlan, decode_clip
from mmfs_assets.features.spec import Clip, Feature, FrameRequest, LoadedModel
from mmfs_assets.table import ensure_group_columns, replace_columns
from mmfs_assets.table.chunks import fragment_chunks
from mmfs_loader import schema as S
from mmfs_loader.sql import equals
from mmfs_loader.video import PLAN_COLUMNS as VIDEO_PLAN_COLUMNS

M = S.METADATA
PLAN_COLUMNS = [*VIDEO_PLAN_COLUMNS, M.producer_column, M.error_column]


@dataclass
class FillReport:
    feature: str
    drop_id: str
    producer: str
    rows_in_partition: int = 0
    rows_already_current: int = 0
    rows_waiting_for_metadata: int = 0
    rows_computed: int = 0
    rows_errored: int = 0
    commits: int = 0
    commit_retries: int = 0
    lance_version: int | None = None
    seconds_decode: float = 0.0  # summed over decode threads
    seconds_decode_wait: float = 0.0  # time the model waited for decoded frames (decoding not hidden)
    seconds_compute: float = 0.0
    seconds_write: float = 0.0
    seconds_total: float = 0.0

    @property
    def rows_written(self) -> int:
        return self.rows_computed + self.rows_errored

    @property
    def rows_per_s(self) -> float:
        return self.rows_written / self.seconds_total if self.seconds_total > 0 else 0.0


@dataclass
class _Decoded:
    rowid: int
    clip: Clip | None
    error: str | None
    seconds: float


def _decode_row(ds: lance.LanceDataset, rowid: int, plan: VideoPlan | None, meta_error: str | None, frames: FrameRequest) -> _Decoded:
    t0 = time.perf_counter()
    if meta_error is not None:
        return _Decoded(rowid, None, f"video has a metadata error: {meta_error}", 0.0)
    try:
        blob = ds.take_blobs(S.VIDEO, ids=[rowid])[0]
        if blob is None:
            return _Decoded(rowid, None, "no video stored for this row", 0.0)
        with blob:
            clip = decode_clip(blob, rowid, plan, frames)
        return _Decoded(rowid, clip, None, time.perf_counter() - t0)
    except DecodeError as e:
        return _Decoded(rowid, None, str(e), time.perf_counter() - t0)
    except Exception as e:  # noqa: BLE001 - a row that cannot be read or decoded is that row's error
        return _Decoded(rowid, None, f"cannot decode: {type(e).__name__}: {e}", time.perf_counter() - t0)


def _compute(model: LoadedModel, clips: Sequence[Clip], columns: Sequence[str]) -> list[dict[str, Any] | str]:
    """Per clip: its values, or an error string. A failing batch is retried clip by clip to isolate
    the clip that breaks it; if every clip fails alone too, the model itself is broken and it raises."""

    def run(batch: Sequence[Clip]) -> list[dict[str, Any]]:
        out = model.compute(batch)
        for c in columns:
            if len(out.get(c, ())) != len(batch):
                raise ValueError(f"compute returned {len(out.get(c, ()))} values of {c!r} for {len(batch)} clips")
        return [{c: out[c][i] for c in columns} for i in range(len(batch))]

    try:
        return list(run(clips))
    except Exception as batch_error:  # noqa: BLE001
        if len(clips) == 1:
            raise
        results: list[dict[str, Any] | str] = []
        for clip in clips:
            try:
                results.append(run([clip])[0])
            except Exception as e:  # noqa: BLE001
                results.append(f"compute failed: {type(e).__name__}: {e}")
        if all(isinstance(r, str) for r in results):
            raise batch_error
        return results


def _column(values: list[Any], f: pa.Field) -> pa.Array:
    t = f.type
    if pa.types.is_fixed_size_list(t) and pa.types.is_floating(t.value_type):
        mask = np.array([v is None for v in values])
        flat = np.zeros((len(values), t.list_size), dtype=t.value_type.to_pandas_dtype())
        for i, v in enumerate(values):
            if v is not None:
                flat[i] = np.asarray(v, dtype=flat.dtype).reshape(t.list_size)
        return pa.FixedSizeListArray.from_arrays(
            pa.array(flat.reshape(-1)), t.list_size, mask=pa.array(mask) if mask.any() else None
        )
    return pa.array(values, type=t)


def _values_table(feature: Feature, producer: str, rowids: list[int], results: dict[int, dict[str, Any] | str]) -> pa.Table:
    g = feature.group
    cols: dict[str, pa.Array] = {"_rowid": pa.array(rowids, pa.uint64())}
    for f in g.value_fields:
        cols[f.name] = _column([None if isinstance(results[r], str) else results[r][f.name] for r in rowids], f)
    cols[g.producer_column] = pa.array([producer] * len(rowids), pa.string())
    cols[g.error_column] = pa.array([results[r] if isinstance(results[r], str) else None for r in rowids], pa.string())
    return pa.table(cols)


def fill_feature(
    uri: str,
    drop_id: str,
    feature: Feature,
    model: LoadedModel,
    *,
    properties: dict[str, str],
    storage_options: dict[str, str] | None = None,
    chunk_rows: int = 256,
    decode_workers: int | None = None,
    prefetch: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> FillReport:
    """Compute ``feature`` for the partition's rows that lack the current producer and write them."""
    t_start = time.perf_counter()
    g = feature.group
    rep = FillReport(feature.name, drop_id, model.producer)
    ds = ensure_group_columns(uri, g, storage_options)
    where = equals(S.DROP_ID, drop_id)
    if M.producer_column not in ds.schema.names:  # video_metadata never ran on this table
        rep.rows_in_partition = rep.rows_waiting_for_metadata = ds.count_rows(filter=where)
        rep.lance_version = ds.version
        rep.seconds_total = time.perf_counter() - t_start
        return rep
    rows = ds.to_table(columns=[*PLAN_COLUMNS, g.producer_column], filter=where, with_row_id=True, with_row_address=True)
    rep.rows_in_partition = len(rows)
    rep.lance_version = ds.version
    producers = rows[g.producer_column].to_pylist()
    has_meta = np.array([p is not None for p in rows[M.producer_column].to_pylist()], dtype=bool)
    current = np.array([p == model.producer for p in producers], dtype=bool)
    rep.rows_already_current = int(current.sum())
    rep.rows_waiting_for_metadata = int((~current & ~has_meta).sum())
    todo = np.flatnonzero(~current & has_meta)
    rowids = rows["_rowid"].to_numpy()
    frag_of = rows["_rowaddr"].to_numpy() >> 32
    meta = {c: rows[c].to_pylist() for c in PLAN_COLUMNS}

    def task(i: int) -> Callable[[], _Decoded]:
        err = meta[M.error_column][i]
        plan = None if err else VideoPlan.from_row({c: meta[c][i] for c in VIDEO_PLAN_COLUMNS})
        return lambda: _decode_row(ds, int(rowids[i]), plan, err, model.frames)

    chunks = [todo[c] for c in fragment_chunks(frag_of[todo], chunk_rows)]
    order = [int(i) for c in chunks for i in c]
    workers = decode_workers or max(1, min(4, os.cpu_count() or 1))
    window = prefetch or max(2 * model.batch_size, 4 * workers)
    value_names = list(g.value_columns)
    done = 0
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"decode-{feature.name}") as pool:
        pending: deque[Future[_Decoded]] = deque()
        submitted = 0

        def top_up() -> None:
            nonlocal submitted
            while submitted < len(order) and len(pending) < window:
                pending.append(pool.submit(task(order[submitted])))
                submitted += 1

        for n_chunk, chunk in enumerate(chunks, start=1):
            results: dict[int, dict[str, Any] | str] = {}
            batch: list[Clip] = []

            def flush() -> None:
                t = time.perf_counter()
                for clip, r in zip(batch, _compute(model, batch, value_names)):
                    results[clip.rowid] = r
                rep.seconds_compute += time.perf_counter() - t
                batch.clear()

            for _ in chunk:
                top_up()
                t = time.perf_counter()
                d = pending.popleft().result()
                rep.seconds_decode_wait += time.perf_counter() - t
                rep.seconds_decode += d.seconds
                if d.error is not None:
                    results[d.rowid] = d.error
                else:
                    batch.append(d.clip)
                    if len(batch) >= model.batch_size:
                        top_up()
                        flush()
            if batch:
                top_up()
                flush()
            ids = [int(rowids[i]) for i in chunk]
            t = time.perf_counter()
            out = replace_columns(
                uri,
                _values_table(feature, model.producer, ids, results),
                locate_filter=where,
                properties={**properties, "mmfs.producer": model.producer, "mmfs.chunk": f"{n_chunk}/{len(chunks)}"},
                storage_options=storage_options,
            )
            rep.seconds_write += time.perf_counter() - t
            rep.commits += 1
            rep.commit_retries += out.attempts - 1
            rep.lance_version = out.version
            errors = sum(isinstance(v, str) for v in results.values())
            rep.rows_errored += errors
            rep.rows_computed += len(ids) - errors
            done += len(ids)
            if progress:
                progress(done, len(order))
    rep.seconds_total = time.perf_counter() - t_start
    return rep
