"""Loader throughput reading from an S3 server against local disk: the same data, the same run.

Two tables are written twice, once on local disk and once in a bucket of an S3-compatible server (moto on
127.0.0.1, started here): ``features`` (``--rows`` rows: 512-d embedding, scalars, a ``--payload``-byte
stand-in video inline) and ``clips`` (``--videos`` 720p H.264 videos ingested inline with their metadata).
Each is read through ``FeatureDataset`` as a training job reads it:

- features: the embedding and three scalars in batches of 256, no node cache (every batch is a Lance
  ``take`` against the store), one epoch; then with the node cache, whose second epoch reads no store;
- clips: 8 frames at 224 per video, decoded from the blobs, batches of 4, decode threads 2.

moto is one Python process serving every request, so the S3 column says more about moto than about S3:
it is the cost of the object-store path (HTTP round trips, no local page cache), not a cloud figure.

Usage: python bench/loader_s3.py [--rows 20000] [--payload 16384] [--videos 16]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.measured import expect_count  # noqa: E402
from tests.loader_util import make_large_table  # noqa: E402
from tests.moto_server import moto_s3  # noqa: E402

COLUMNS = ["clip_embedding", "height", "fps", "duration_s"]


def read_features(uri: str, opts, cache: bool, expected: int) -> dict:
    from mmfs_loader import FeatureDataset, Reading

    t0 = time.perf_counter()
    ds = FeatureDataset(uri, columns=COLUMNS, batch_size=256, shuffle=True, seed=0, storage_options=opts,
                        reading=Reading(cache_bytes=(512 << 20) if cache else 0))
    ends, rows, first = [], 0, None
    for epoch in range(2 if cache else 1):
        ds.set_epoch(epoch)
        for b in ds:
            rows += len(b["id"])
            first = first or time.perf_counter() - t0
        ends.append(time.perf_counter() - t0)
    expect_count(f"rows read from {uri} ({len(ends)} epochs)", rows, expected * len(ends))
    return {"first_batch_s": first, "epoch1_s": ends[0], "epoch2_s": ends[-1] - ends[0] if cache else None,
            "rows": rows // len(ends)}


def read_clips(uri: str, opts, expected: int) -> dict:
    from mmfs_loader import ClipSpec, FeatureDataset, Reading

    t0 = time.perf_counter()
    ds = FeatureDataset(uri, columns=["file_name"], clip=ClipSpec(frames=8, size=224), batch_size=4, shuffle=True,
                        seed=0, storage_options=opts, reading=Reading(decode_threads=2))
    n = 0
    ok = 0
    for b in ds:
        ok += int(b["clip_ok"].sum())
        n += len(b["id"])
    dt = time.perf_counter() - t0
    expect_count(f"clips read from {uri}", n, expected)
    expect_count(f"clips decoded from {uri}", ok, expected)
    return {"clips": n, "seconds": dt}


def range_get_ms(opts, prefix: str) -> tuple[float, int]:
    """Median time of a 2 KB range GET from the largest data file of a table on the server, and its size."""
    import statistics

    from mmfs_assets.ingest.s3_client import s3_client

    client = s3_client(opts)
    objs = client.list_objects_v2(Bucket="mmfs", Prefix=prefix)["Contents"]
    big = max((o for o in objs if o["Key"].endswith(".lance") and "/data/" in o["Key"]), key=lambda o: o["Size"])
    runs = []
    for _ in range(20):
        t = time.perf_counter()
        client.get_object(Bucket="mmfs", Key=big["Key"], Range="bytes=0-2047")["Body"].read()
        runs.append(time.perf_counter() - t)
    return statistics.median(runs) * 1000, int(big["Size"])


def build_clips(drop: Path, uri: str, opts) -> None:
    from mmfs_assets.ingest.describe import describe_partition
    from mmfs_assets.ingest.ingest_drop import ingest_drop
    from mmfs_loader.contract.table import TableRef

    ref = TableRef(uri, opts)
    ingest_drop(drop, "clips", ref, properties={}, video_storage="inline")
    describe_partition(ref, "clips", properties={})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--payload", type=int, default=16_384)
    ap.add_argument("--videos", type=int, default=16)
    args = ap.parse_args()
    from mmfs_assets import samples

    tmp = Path(tempfile.mkdtemp(prefix="mmfs-loader-s3-"))
    drop = tmp / "clips"
    drop.mkdir()
    for i in range(args.videos):
        spec = samples.Spec(f"v{i:03d}.mp4", 1280, 720, 30, 2.0 + i / 30, gop=30, options={"preset": "veryfast"})
        samples.write_video(drop / spec.name, spec)
    results = {}
    with moto_s3("mmfs") as s3:
        for where, base, opts in (("local disk", str(tmp), None), ("S3 server", "s3://mmfs/bench", s3)):
            make_large_table(f"{base}/features.lance", args.rows, dim=512, video_bytes=args.payload, storage_options=opts)
            build_clips(drop, f"{base}/clips.lance", opts)
            results[where] = {
                "cold": read_features(f"{base}/features.lance", opts, cache=False, expected=args.rows),
                "cached": read_features(f"{base}/features.lance", opts, cache=True, expected=args.rows),
                "clips": read_clips(f"{base}/clips.lance", opts, expected=args.videos),
            }
            print(f"{where}: {results[where]}", flush=True)
        get_ms, get_size = range_get_ms(s3, "bench/features.lance/data/")
    loc, s3r = results["local disk"], results["S3 server"]
    print(f"\nloader throughput, {args.rows:,} rows (512-d embedding + 3 scalars, {args.payload:,} B inline payload "
          f"not read), {args.videos} 720p videos; moto on 127.0.0.1")
    print(f"{'read':<44} {'local disk':>14} {'S3 server':>14} {'S3 / local':>11}")

    def row(name: str, a: float, b: float, unit: str) -> None:
        print(f"{name:<44} {a:>10,.0f} {unit:<3} {b:>10,.0f} {unit:<3} {b / a:>10.2f}x")

    row("features, no cache: rows/s (epoch 1)", loc["cold"]["rows"] / loc["cold"]["epoch1_s"],
        s3r["cold"]["rows"] / s3r["cold"]["epoch1_s"], "/s")
    row("features, node cache: rows/s (epoch 2)", loc["cached"]["rows"] / loc["cached"]["epoch2_s"],
        s3r["cached"]["rows"] / s3r["cached"]["epoch2_s"], "/s")
    row("features: first batch (ms)", loc["cold"]["first_batch_s"] * 1000, s3r["cold"]["first_batch_s"] * 1000, "ms")
    row("clips (8x224, decode threads 2): clips/s", loc["clips"]["clips"] / loc["clips"]["seconds"],
        s3r["clips"]["clips"] / s3r["clips"]["seconds"], "/s")
    print(f"(the server: a 2 KB range GET from a {get_size / 1e6:.0f} MB data file takes {get_ms:.1f} ms, median of 20)")


if __name__ == "__main__":
    main()
