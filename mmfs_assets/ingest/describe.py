"""Filling the metadata column group for one drop's rows, reading each video from the table.

Only rows of the partition whose ``metadata_producer`` is not the current producer are probed, so a
re-run after a crash (or a re-materialization) redoes only what is missing. Rows are handled in chunks
of whole fragments; every chunk is one column-only commit (see :mod:`mmfs_assets.table.replace`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import av
import numpy as np
import pyarrow as pa

from mmfs_assets.ingest.probe import ProbeResult, probe_video
from mmfs_assets.table import ensure_group_columns, replace_columns
from mmfs_assets.table.chunks import fragment_chunks
from mmfs_loader import schema as S
from mmfs_loader.sql import equals

METADATA_CODE_VERSION = "metadata-v2"  # v2: corrupt_frames, lost_frames, damage quarantine


def metadata_producer(max_corrupt_frames: int = 0) -> str:
    """Who made the metadata values: the probe's code version, the exact decoder build, the damage threshold."""
    return (f"mmfs.probe:{METADATA_CODE_VERSION}/pyav-{av.__version__}/ffmpeg-{av.ffmpeg_version_info}"
            f"|max_corrupt_frames={max_corrupt_frames}")


@dataclass
class DescribeReport:
    drop_id: str
    producer: str
    rows_in_partition: int = 0
    rows_described: int = 0
    rows_already_current: int = 0
    errors: int = 0
    bytes_read: int = 0
    commits: int = 0
    retries: int = 0
    lance_version: int | None = None
    seconds: float = 0.0


def _probe_row(ds, rowid: int, size: int, max_corrupt_frames: int = 0) -> ProbeResult:
    try:
        blob = ds.take_blobs(S.VIDEO, ids=[rowid])[0]
    except Exception as e:  # noqa: BLE001 - a missing pointer target is this row's error
        return ProbeResult(error=f"cannot read the video: {type(e).__name__}: {e}")
    if blob is None:
        return ProbeResult(error="no video stored for this row")
    try:
        with blob:
            return probe_video(blob, size_bytes=size, max_corrupt_frames=max_corrupt_frames)
    except Exception as e:  # noqa: BLE001
        return ProbeResult(error=f"probe failed: {type(e).__name__}: {e}")


def _values(rowids: list[int], results: list[ProbeResult], producer: str) -> pa.Table:
    cols: dict[str, pa.Array] = {"_rowid": pa.array(rowids, pa.uint64())}
    for f in S.METADATA.value_fields:
        cols[f.name] = pa.array([r.values.get(f.name) for r in results], f.type)
    cols[S.METADATA.producer_column] = pa.array([producer] * len(results), pa.string())
    cols[S.METADATA.error_column] = pa.array([r.error for r in results], pa.string())
    return pa.table(cols)


def describe_partition(
    uri: str,
    drop_id: str,
    *,
    properties: dict[str, str],
    storage_options: dict[str, str] | None = None,
    chunk_rows: int = 256,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    max_corrupt_frames: int = 0,
) -> DescribeReport:
    """Probe the partition's rows that lack current metadata and write the metadata group.

    A video with more than ``max_corrupt_frames`` concealed/corrupt frames or lost packets is quarantined.
    """
    if max_corrupt_frames < 0:
        raise ValueError(f"max_corrupt_frames must be >= 0, not {max_corrupt_frames}")
    t0 = time.perf_counter()
    producer = metadata_producer(max_corrupt_frames)
    rep = DescribeReport(drop_id, producer)
    ds = ensure_group_columns(uri, S.METADATA, storage_options)
    where = equals(S.DROP_ID, drop_id)
    rows = ds.to_table(
        columns=[S.SIZE_BYTES, S.METADATA.producer_column], filter=where, with_row_id=True, with_row_address=True
    )
    rep.rows_in_partition = len(rows)
    current = np.array([p == producer for p in rows[S.METADATA.producer_column].to_pylist()], dtype=bool)
    rep.rows_already_current = int(current.sum())
    todo = np.flatnonzero(~current)
    rowids = rows["_rowid"].to_numpy()[todo]
    sizes = rows[S.SIZE_BYTES].to_numpy(zero_copy_only=False)[todo]
    frag_of = rows["_rowaddr"].to_numpy()[todo] >> 32
    rep.lance_version = ds.version
    workers = workers or max(1, os.cpu_count() or 1)
    done = 0
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="probe") as pool:
        for chunk in fragment_chunks(frag_of, chunk_rows):
            ids = [int(x) for x in rowids[chunk]]
            results = list(pool.map(lambda a: _probe_row(ds, *a, max_corrupt_frames),
                                    zip(ids, [int(s) for s in sizes[chunk]])))
            values = _values(ids, results, producer)
            out = replace_columns(
                uri, values, locate_filter=where, properties=properties, storage_options=storage_options
            )
            rep.commits += 1
            rep.retries += out.attempts - 1
            rep.lance_version = out.version
            rep.rows_described += len(ids)
            rep.errors += sum(r.error is not None for r in results)
            rep.bytes_read += int(sizes[chunk].sum())
            done += len(ids)
            if progress:
                progress(done, len(todo))
    rep.seconds = time.perf_counter() - t0
    return rep
