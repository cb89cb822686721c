"""Ingest and metadata throughput, against the alternatives measured in the same run.

- ingest (inline and pointer) in MB/s against `cp -r` of the same drop folder on the same disk;
- metadata (the `video_metadata` fill, reading videos from the table's blobs) in videos/s against a
  plain PyAV decode loop over the same files on disk;
- bytes written by the metadata fill against the size of the metadata columns and of the table.

Usage: python bench/ingest_metadata.py [--files 48] [--mb 8] [--out bench/out]
Page cache is warm for every contender (the files are read once before timing).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LANCE_LOG", "error")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import av  # noqa: E402
import lance  # noqa: E402
import numpy as np  # noqa: E402

from bench.measured import expect_count  # noqa: E402
from mmfs_assets import samples  # noqa: E402
from mmfs_assets.ingest.describe import describe_partition  # noqa: E402
from mmfs_assets.ingest.ingest_drop import ingest_drop  # noqa: E402
from mmfs_loader.contract import schema as S  # noqa: E402


def make_drop(root: Path, n: int, mb: int, spec: samples.Spec | None = None) -> Path:
    """``n`` unique files of about ``mb`` MB: a real H.264 clip (``spec``, default 720p 4 s with a 1 s GOP)
    padded with random bytes (at least 8: identical files would be one row)."""
    drop = root / "drop"
    drop.mkdir(parents=True)
    spec = spec or samples.Spec("clip.mp4", 1280, 720, 30, 4.0, gop=30, options={"preset": "ultrafast"})
    clip = samples.write_video(root / "clip.mp4", spec)
    base = clip.read_bytes()
    rng = np.random.default_rng(0)
    pad = max(8, mb * (1 << 20) - len(base))  # at least a few random bytes: identical files would be one row
    for i in range(n):
        (drop / f"video_{i:04d}.mp4").write_bytes(base + rng.bytes(pad))
    return drop


def tree_bytes(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def bench_cp(drop: Path, root: Path) -> float:
    dst = root / "cp_copy"
    t = time.perf_counter()
    subprocess.run(["cp", "-r", str(drop), str(dst)], check=True)
    os.sync()
    dt = time.perf_counter() - t
    shutil.rmtree(dst)
    return dt


def bench_ingest(drop: Path, root: Path, mode: str) -> tuple[float, str]:
    uri = str(root / f"table_{mode}.lance")
    t = time.perf_counter()
    rep = ingest_drop(drop, "bench", uri, properties={"mmfs.asset": "bench"}, video_storage=mode)
    os.sync()
    dt = time.perf_counter() - t
    expect_count(f"files ingested ({mode})", rep.new_rows, len(list(drop.iterdir())))
    return dt, uri


def bench_pyav_decode(drop: Path) -> float:
    t = time.perf_counter()
    files = sorted(drop.iterdir())
    decoded = 0
    for p in files:
        with av.open(str(p)) as c:
            s = c.streams.video[0]
            s.thread_type = "AUTO"
            decoded += sum(1 for _ in c.decode(s)) > 0
    dt = time.perf_counter() - t
    expect_count("files PyAV decoded (at least one frame each)", decoded, len(files))
    return dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=48)
    ap.add_argument("--mb", type=int, default=8)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="mmfs-bench-", dir=os.environ.get("MMFS_BENCH_DIR")))
    try:
        drop = make_drop(root, args.files, args.mb)
        size_mb = tree_bytes(drop) / 1e6
        for p in drop.iterdir():  # warm the page cache for every contender
            p.read_bytes()
        print(f"drop: {args.files} files, {size_mb:.1f} MB (720p H.264 4 s clip + padding each)")
        t_cp = min(bench_cp(drop, root) for _ in range(2))
        t_in, uri = bench_ingest(drop, root, "inline")
        t_ptr, _ = bench_ingest(drop, root, "pointer")
        print(f"cp -r           {size_mb / t_cp:8.1f} MB/s")
        print(f"ingest inline   {size_mb / t_in:8.1f} MB/s   {t_cp / t_in:5.2f}x cp  (hash + copy into Lance blobs)")
        print(f"ingest pointer  {size_mb / t_ptr:8.1f} MB/s   {t_cp / t_ptr:5.2f}x cp  (hash + URI only)")

        t_dec = bench_pyav_decode(drop)
        before = tree_bytes(Path(uri))
        t = time.perf_counter()
        rep = describe_partition(uri, "bench", properties={"mmfs.asset": "bench"})
        t_meta = time.perf_counter() - t
        written = tree_bytes(Path(uri)) - before
        n = args.files
        expect_count(f"videos the metadata fill described ({rep.rows_errored} errored)", rep.rows_computed, n)
        print(f"pyav decode     {n / t_dec:8.2f} videos/s (files on disk, one thread pool per file)")
        print(f"metadata fill   {n / t_meta:8.2f} videos/s   {t_dec / t_meta:5.2f}x pyav decode  "
              f"(from Lance blobs in {rep.decode_workers} engine workers, {rep.commits} commit)")
        meta_cols = lance.dataset(uri).to_table(columns=list(S.METADATA.columns)).nbytes
        print(f"metadata bytes written {written} B (incl. manifest + txn) for {meta_cols} B of Arrow column data "
              f"= {written / meta_cols:.2f}x; table holds {before / 1e6:.1f} MB")
        print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
