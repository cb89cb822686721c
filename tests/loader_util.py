"""A synthetic MMFS table for loader tests: real schema (ingest, metadata and an embedding group),
no videos, so hundreds of rows cost milliseconds."""

from __future__ import annotations

import lance
import numpy as np
import pyarrow as pa
from lance.blob import blob_array

from mmfs_loader.contract import schema as S
from mmfs_loader.contract.schema import ColumnGroup

DIM = 8


def emb_group(dim: int = DIM) -> ColumnGroup:
    return ColumnGroup("clip_embedding", (pa.field("clip_embedding", pa.list_(pa.float32(), dim)),))


EMB = emb_group()
PRODUCER = "clip_embedding:1|model=tiny|weights=sha256:abc|frames=8x224|dtype=float32"


def rows(
    start: int,
    n: int,
    drop: str = "d1",
    producer: str | None = PRODUCER,
    quarantine_every: int = 0,
    dim: int = DIM,
    video_bytes: int = 0,
) -> pa.Table:
    """Rows ``start .. start+n``: height cycles 360/720/1080, embedding = [i, i, ...] / 1000."""
    idx = np.arange(start, start + n)
    bad = (idx % quarantine_every == 0) if quarantine_every else np.zeros(n, bool)
    emb_fields = emb_group(dim).fields
    schema = pa.schema([*S.INGEST_SCHEMA, *S.METADATA.fields, *emb_fields])
    cols = {
        S.ID: [f"v{i:06d}" for i in idx],
        S.DROP_ID: [drop] * n,
        S.SOURCE_URI: [f"file:///drops/{drop}/{i}.mp4" for i in idx],
        S.FILE_NAME: [f"{i}.mp4" for i in idx],
        S.SIZE_BYTES: idx * 10,
        S.INGESTED_AT: pa.array([0] * n, pa.timestamp("us", tz="UTC")),
        S.VIDEO_STORAGE: ["inline"] * n,
        S.VIDEO: blob_array([_payload(i, video_bytes) if video_bytes else None for i in idx]),
    }
    meta = {f.name: pa.nulls(n, f.type) for f in S.METADATA.value_fields}
    meta["height"] = pa.array(np.where(bad, None, [(360, 720, 1080)[i % 3] for i in idx]), pa.int32())
    meta["width"] = pa.array(np.where(bad, None, 640), pa.int32())
    meta["fps"] = pa.array(np.where(bad, None, 30.0), pa.float64())
    meta["duration_s"] = pa.array(np.where(bad, None, 4.0), pa.float64())
    cols.update(meta)
    cols[S.METADATA.producer_column] = ["video_metadata:1"] * n
    cols[S.METADATA.error_column] = [("probe failed: corrupt" if b else None) for b in bad]
    emb = np.repeat((idx / 1000.0).astype(np.float32)[:, None], dim, axis=1)
    cols["clip_embedding"] = pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), dim)
    cols[EMB.producer_column] = [producer] * n
    cols[EMB.error_column] = pa.nulls(n, pa.string())
    return pa.table(cols, schema=schema)


def _payload(i: int, size: int) -> bytes:
    """Stand-in video bytes (incompressible, like real video)."""
    return np.random.default_rng(int(i)).bytes(size)


def make_table(uri: str, n: int = 300, **kw) -> lance.LanceDataset:
    return lance.write_dataset(rows(0, n, **kw), uri, max_rows_per_file=64, enable_stable_row_ids=True)


def append(uri: str, start: int, n: int, **kw) -> lance.LanceDataset:
    return lance.write_dataset(rows(start, n, **kw), uri, mode="append", max_rows_per_file=64)


def make_large_table(uri: str, n: int, *, dim: int, video_bytes: int, chunk: int = 10_000, fragment_rows: int = 10_000,
                     storage_options: dict[str, str] | None = None) -> lance.LanceDataset:
    """``n`` rows written in chunks (benchmarks): bounded memory whatever ``n``."""
    ds = None
    for start in range(0, n, chunk):
        t = rows(start, min(chunk, n - start), dim=dim, video_bytes=video_bytes)
        ds = lance.write_dataset(
            t, uri, mode="create" if ds is None else "append", max_rows_per_file=fragment_rows,
            enable_stable_row_ids=True, storage_options=storage_options,
        )
    assert ds is not None
    return ds
