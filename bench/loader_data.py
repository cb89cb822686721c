"""Data for bench/loader.py: one set of samples in each format a training job might read.

- ``features.lance``: the MMFS table (real schema, stable row ids) with a 512-d ``clip_embedding``,
  scalars and a stand-in video payload per row stored inline, tagged ``bench``.
- ``wds/``: WebDataset tar shards of the same samples (``emb.npy``, ``json`` scalars, ``mp4`` payload):
  the format stores whole samples, so a reader of the embeddings reads the videos too.
- ``features.parquet``: the same columns, video included, in 10k-row row groups.
- ``clips.lance`` and ``clips/``: 720p H.264 videos, ingested inline with their metadata, and the same
  files on disk.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.loader_util import make_large_table, rows  # noqa: E402

COLUMNS = ["clip_embedding", "height", "fps", "duration_s"]
TAG = "bench"


def build_features(root: Path, n: int, payload: int, shard_rows: int = 5000) -> None:
    import webdataset as wds

    uri = str(root / "features.lance")
    ds = make_large_table(uri, n, dim=512, video_bytes=payload)
    ds.tags.create(TAG, ds.version)
    (root / "wds").mkdir()
    pw = None
    for start in range(0, n, 10_000):
        t = rows(start, min(10_000, n - start), dim=512, video_bytes=payload)
        # the same samples as plain columns (the blob column type is Lance's own)
        videos = pa.array([np.random.default_rng(int(i[1:])).bytes(payload) for i in t["id"].to_pylist()], pa.binary())
        plain = t.select(["id", *COLUMNS]).append_column("video", videos)
        if pw is None:
            pw = pq.ParquetWriter(root / "features.parquet", plain.schema)
        pw.write_table(plain, row_group_size=10_000)
        emb = plain["clip_embedding"].combine_chunks().flatten().to_numpy().reshape(len(plain), 512)
        scal = plain.select(["height", "fps", "duration_s"]).to_pylist()
        for k in range(0, len(plain), shard_rows):
            with wds.TarWriter(str(root / "wds" / f"shard-{(start + k) // shard_rows:05d}.tar")) as w:
                for j in range(k, min(k + shard_rows, len(plain))):
                    buf = io.BytesIO()
                    np.save(buf, emb[j])
                    w.write({"__key__": plain["id"][j].as_py(), "emb.npy": buf.getvalue(),
                             "json": json.dumps(scal[j]).encode(), "mp4": videos[j].as_py()})
    assert pw is not None
    pw.close()


def build_clips(root: Path, videos: int, seconds: float) -> None:
    from mmfs_assets import samples
    from mmfs_assets.ingest.describe import describe_partition
    from mmfs_assets.ingest.ingest_drop import ingest_drop

    d = root / "clips"
    d.mkdir()
    for i in range(videos):
        # distinct lengths: identical files would be one row (ids are content hashes)
        spec = samples.Spec(f"v{i:03d}.mp4", 1280, 720, 30, seconds + i / 30, gop=30, options={"preset": "veryfast"})
        samples.write_video(d / spec.name, spec)
    uri = str(root / "clips.lance")
    ingest_drop(d, "clips", uri, properties={"mmfs.asset": "videos"}, video_storage="inline")
    describe_partition(uri, "clips", properties={"mmfs.asset": "video_metadata"})


def build_big(root: Path, n: int, dim: int = 512, chunk: int = 200_000) -> None:
    """``big.lance``: ``n`` rows of ``id`` + a random ``dim``-d float32 embedding group (no videos, no
    metadata), in 1M-row fragments, tagged ``bench``: the windowed shuffle's larger-than-memory case."""
    import lance

    uri = str(root / "big.lance")
    prod = "clip_embedding:1|model=bench|frames=8x224|dtype=float32"
    ds = None
    rng = np.random.default_rng(0)
    for start in range(0, n, chunk):
        k = min(chunk, n - start)
        emb = rng.standard_normal((k, dim), dtype=np.float32)
        t = pa.table({
            "id": pa.array([f"b{i:09d}" for i in range(start, start + k)]),
            "clip_embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), dim),
            "clip_embedding_producer": pa.array([prod] * k),
            "clip_embedding_error": pa.nulls(k, pa.string()),
        })
        ds = lance.write_dataset(t, uri, mode="create" if ds is None else "append", max_rows_per_file=1_000_000,
                                 enable_stable_row_ids=True)
        print(f"\rbig table: {start + k:,} of {n:,} rows", end="", flush=True)
    print()
    assert ds is not None
    ds.tags.create(TAG, ds.version)
