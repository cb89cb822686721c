"""Training reads: FeatureDataset against the loaders a user would otherwise pick, in one run.

Feature reads (``clip_embedding`` 512-d + 3 scalars, batches of 256, one epoch, warm page cache):
  mmfs shuffled      FeatureDataset, global shuffle, main process (the selection fits the cache: one
                     filtered scan, then in-memory gathers)
  ... take           the same with cache_bytes=0: every block is a take by row id
  mmfs sequential    FeatureDataset, no shuffle
  lance torch        lance.torch.data.LanceDataset, ShardedBatchSampler(randomize=True): Lance's own
                     loader can only shuffle the order of contiguous batches, not rows
  lance torch seq    LanceDataset, FullScanSampler
  webdataset         tar shards (the format holds whole samples: video bytes too), shard shuffle +
                     a 2,000-sample shuffle buffer, npy/json decode
  parquet            pyarrow reads the projected columns, then a global permutation in memory
Clip reads (8 frames at 224 from 720p H.264, one decode thread each side): FeatureDataset(clip=...)
from inline blobs against the same PyAV code on the same mp4 files from disk, same frame times.
Time to first batch: constructing a FeatureDataset on the tag (resolve, filter, guard) + first batch.

Each measurement runs in its own process (its peak RSS is its own). Usage:
  python bench/loader.py [--rows 100000] [--payload-kb 8] [--videos 12] [--seconds 4] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LANCE_LOG", "error")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BATCH = 256
EPOCHS = 2  # feature reads: the MMFS cache pays in epoch 1 and is reused after


def _epochs(n: int, ends: list[float], first: float | None) -> dict:
    return {"rows": n, "seconds": ends[-1], "first_batch_s": first, "epoch1_s": ends[0],
            "epoch2_s": ends[1] - ends[0] if len(ends) > 1 else None}


def _rss_mb() -> float:
    """Peak RSS of this process (VmHWM: getrusage's maxrss carries the parent's peak across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_mmfs(data: Path, shuffle: bool, cache: bool = True) -> dict:
    from bench.loader_data import COLUMNS, TAG
    from mmfs_loader import FeatureDataset

    t0 = time.perf_counter()
    ds = FeatureDataset(str(data / "features.lance"), tag=TAG, columns=COLUMNS, shuffle=shuffle, seed=0,
                        batch_size=BATCH, cache_bytes=(512 << 20) if cache else 0)
    n, first, ends = 0, None, []
    for epoch in range(EPOCHS):
        ds.set_epoch(epoch)
        for b in ds:
            n += len(b["id"])
            first = first or time.perf_counter() - t0
        ends.append(time.perf_counter() - t0)
    return _epochs(n, ends, first)


def run_lance_torch(data: Path, shuffle: bool) -> dict:
    import lance
    from lance.sampler import FullScanSampler, ShardedBatchSampler
    from lance.torch.data import LanceDataset

    from bench.loader_data import COLUMNS, TAG

    t0 = time.perf_counter()
    ds = lance.dataset(str(data / "features.lance"), version=TAG)
    sampler = ShardedBatchSampler(0, 1, randomize=True, seed=0) if shuffle else FullScanSampler()
    # `id` (a string) is left out: LanceDataset's tensor conversion only takes numbers.
    loader = LanceDataset(ds, batch_size=BATCH, columns=COLUMNS, sampler=sampler, auto_detect_rank=False)
    n, first, ends = 0, None, []
    for _ in range(EPOCHS):
        for b in loader:
            n += len(b["height"])
            first = first or time.perf_counter() - t0
        ends.append(time.perf_counter() - t0)
    return _epochs(n, ends, first)


def run_webdataset(data: Path) -> dict:
    import torch
    import webdataset as wds

    t0 = time.perf_counter()
    shards = sorted(str(p) for p in (data / "wds").glob("*.tar"))
    pipe = (
        wds.WebDataset(shards, shardshuffle=len(shards), seed=0, empty_check=False)
        .shuffle(2000, seed=0).decode().to_tuple("__key__", "emb.npy", "json").batched(BATCH)
    )
    n, first = 0, None
    for _keys, emb, _meta in pipe:
        x = torch.from_numpy(emb) if not isinstance(emb, torch.Tensor) else emb
        n += len(x)
        first = first or time.perf_counter() - t0
    return {"rows": n, "seconds": time.perf_counter() - t0, "first_batch_s": first}


def run_parquet(data: Path) -> dict:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    from bench.loader_data import COLUMNS

    t0 = time.perf_counter()
    t = pq.read_table(data / "features.parquet", columns=["id", *COLUMNS]).combine_chunks()
    perm = np.random.default_rng(0).permutation(len(t))
    n, first = 0, None
    for s in range(0, len(t), BATCH):
        b = t.take(pa.array(perm[s : s + BATCH]))
        emb = torch.from_numpy(b["clip_embedding"].combine_chunks().flatten().to_numpy().reshape(len(b), 512).copy())
        _ = {c: torch.from_numpy(b[c].to_numpy()) for c in COLUMNS[1:]}, b["id"].to_pylist()
        n += len(emb)
        first = first or time.perf_counter() - t0
    return {"rows": n, "seconds": time.perf_counter() - t0, "first_batch_s": first}


def run_clips_mmfs(data: Path, threads: int) -> dict:
    from mmfs_loader import FeatureDataset

    t0 = time.perf_counter()
    ds = FeatureDataset(str(data / "clips.lance"), columns=["file_name"], clip=dict(frames=8, size=224),
                        batch_size=4, decode_threads=threads, seed=0)
    n = 0
    for b in ds:
        assert b["clip_ok"].all() and b["frames"].shape[1:] == (8, 3, 224, 224)
        n += len(b["id"])
    return {"rows": n, "seconds": time.perf_counter() - t0}


def run_clips_files(data: Path, threads: int) -> dict:
    """The same decode (mmfs_loader.clips.decode_clip: same seeks, same times) on the mp4 files."""
    from concurrent.futures import ThreadPoolExecutor

    import lance

    from mmfs_loader.clips import ClipSpec, decode_clip, draw
    from mmfs_loader.video import PLAN_COLUMNS, VideoPlan

    t0 = time.perf_counter()  # both sides include reading the metadata that plans the seeks
    meta = lance.dataset(str(data / "clips.lance")).to_table(columns=["file_name", *PLAN_COLUMNS], with_row_id=True)
    jobs = [(data / "clips" / r["file_name"], VideoPlan.from_row(r), int(r["_rowid"])) for r in meta.to_pylist()]
    spec = ClipSpec(frames=8, size=224)
    with ThreadPoolExecutor(threads) as pool:
        out = list(pool.map(lambda j: decode_clip(str(j[0]), j[1], spec, draw(0, 0, j[2])), jobs))
    assert all(f.shape == (8, 3, 224, 224) for f, _ in out)
    return {"rows": len(out), "seconds": time.perf_counter() - t0}


RUNS = {
    "mmfs shuffled": lambda d: run_mmfs(d, True),
    "mmfs shuffled, take (no cache)": lambda d: run_mmfs(d, True, cache=False),
    "mmfs sequential": lambda d: run_mmfs(d, False),
    "lance torch (batch shuffle)": lambda d: run_lance_torch(d, True),
    "lance torch (sequential)": lambda d: run_lance_torch(d, False),
    "webdataset": run_webdataset,
    "parquet (pyarrow)": run_parquet,
    "clips mmfs (1 thread)": lambda d: run_clips_mmfs(d, 1),
    "clips files (1 thread)": lambda d: run_clips_files(d, 1),
    "clips mmfs (2 threads)": lambda d: run_clips_mmfs(d, 2),
    "clips files (2 threads)": lambda d: run_clips_files(d, 2),
}


def measure(name: str, data: Path) -> dict:
    """Run one measurement in a fresh process; its rows/s and peak RSS."""
    code = f"import json,sys; sys.path.insert(0, {str(ROOT)!r}); from bench.loader import RUNS, _rss_mb; from pathlib import Path; " \
           f"r = RUNS[{name!r}](Path({str(data)!r})); r['peak_rss_mb'] = _rss_mb(); print('RESULT', json.dumps(r))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if out.returncode or line is None:
        raise SystemExit(f"{name} failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    r = json.loads(line[7:])
    r["rows_per_s"] = r["rows"] / r["seconds"]
    return r


def warm(path: Path) -> None:
    for p in path.rglob("*"):
        if p.is_file():
            with open(p, "rb") as f:
                while f.read(1 << 24):
                    pass


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--payload-kb", type=int, default=8)
    ap.add_argument("--videos", type=int, default=48)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--keep", type=Path, help="build the data here (reused when it exists)")
    ap.add_argument("--only", default="", help="measurement names separated by ';'")
    args = ap.parse_args()
    from bench.loader_data import build_clips, build_features

    data = args.keep or Path(tempfile.mkdtemp(prefix="mmfs-bench-loader-"))
    data.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    if not (data / "features.lance").exists():
        build_features(data, args.rows, args.payload_kb * 1024)
    if not (data / "clips.lance").exists():
        build_clips(data, args.videos, args.seconds)
    print(f"data ready in {time.perf_counter() - t:.0f} s under {data}")
    warm(data)
    names = [n for n in RUNS if not args.only or n in args.only.split(";")]
    res = {}
    for name in names:
        res[name] = measure(name, data)
        r = res[name]
        extra = f", first batch {r['first_batch_s']:.3f} s" if r.get("first_batch_s") else ""
        if r.get("epoch2_s"):
            extra += f", epoch 1 {r['epoch1_s']:.3f} s, epoch 2 {r['epoch2_s']:.3f} s"
        print(f"{name:30s} {r['rows']:>7d} rows  {r['rows_per_s']:>10.1f} rows/s  peak RSS {r['peak_rss_mb']:.0f} MB{extra}", flush=True)
    ratio = lambda a, b: res[a]["rows_per_s"] / res[b]["rows_per_s"] if a in res and b in res else float("nan")  # noqa: E731
    print("\nratios (rows/s):")
    for a, b in [("mmfs shuffled", "lance torch (batch shuffle)"), ("mmfs shuffled", "lance torch (sequential)"),
                 ("mmfs shuffled, take (no cache)", "lance torch (batch shuffle)"),
                 ("mmfs shuffled, take (no cache)", "webdataset"),
                 ("mmfs shuffled", "webdataset"), ("mmfs shuffled", "parquet (pyarrow)"),
                 ("mmfs sequential", "lance torch (sequential)"),
                 ("clips mmfs (1 thread)", "clips files (1 thread)"), ("clips mmfs (2 threads)", "clips files (2 threads)")]:
        print(f"  {a} / {b}: {ratio(a, b):.2f}x")
    print(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": res}, indent=None))
    if not args.keep:
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
