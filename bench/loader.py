"""Training reads: FeatureDataset against the loaders a user would otherwise pick, in one run.

Feature reads (``clip_embedding`` 512-d + 3 scalars, batches of 256, three epochs: the first and the best
of the later two, warm page cache;
the contenders live in bench/loader_runs.py):
  mmfs global shuffle          FeatureDataset(shuffle=True): exact global shuffle; the node cache fills in
                               the background while the first batches are read by take
  ... 2 workers                the same through its DataLoader with 2 spawned workers (RSS per worker)
  ... take only                Reading(cache_bytes=0): every block a take by row id
  mmfs windowed shuffle        Shuffle(window=1024, buffer=8192), no cache: buffers of neighbouring rows
  mmfs sequential              no shuffle
  lance torch                  lance.torch.data.LanceDataset, ShardedBatchSampler(randomize=True) (it can
                               only shuffle the order of contiguous batches) or FullScanSampler
  lancedb StreamingDataset     lancedb 0.40's elastic loader as documented: DataLoader(StreamingDataset(
                               table, shuffle_seed=0), batch_size=256) (rows one by one; first 25,600 timed)
  webdataset                   tar shards (whole samples: video bytes too), shard shuffle + 2,000-sample buffer
  parquet                      pyarrow reads the projected columns, then a global permutation in memory
Larger than the cache (``--big-rows``, default 10M rows of a 512-d embedding, about 20 GB): the windowed
shuffle against LanceDataset's sequential read of the same table, with RSS per worker.
Clip reads (8 frames at 224 from 720p H.264, 2 DataLoader workers each side, 4 epochs, clips/s after the
first batch): FeatureDataset(clip=...) from inline blobs, unaligned and keyframe-aligned, against a plain
PyAV dataset over the same mp4 files (seek, decode to a random start, 8 frames, FFmpeg scaling).

Each measurement runs in its own process (its peak RSS is its own; its node cache directory is fresh).
Usage:
  python bench/loader.py [--rows 100000] [--big-rows 10000000] [--videos 48] [--keep DIR] [--only NAMES]
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

from bench.loader_runs import EPOCHS, RUNS  # noqa: E402


def _rss_mb() -> float:
    """Peak RSS of this process (VmHWM: getrusage's maxrss carries the parent's peak across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(name: str, data: Path) -> dict:
    """Run one measurement in a fresh process, with a fresh node cache directory; its rows/s and peak RSS."""
    code = f"import json,sys; sys.path.insert(0, {str(ROOT)!r}); from bench.loader_runs import RUNS; from bench.loader import _rss_mb; from pathlib import Path; " \
           f"r = RUNS[{name!r}](Path({str(data)!r})); r['peak_rss_mb'] = _rss_mb(); print('RESULT', json.dumps(r))"
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None  # where the node directory goes by default
    with tempfile.TemporaryDirectory(prefix="mmfs-bench-node-", dir=shm) as node:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MMFS_LOADER_CACHE_DIR": node}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
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


def _line(name: str, r: dict) -> str:
    extra = f", first batch {r['first_batch_s']:.3f} s" if r.get("first_batch_s") else ""
    if r.get("epoch2_s"):
        extra += f", epoch 1 {r['epoch1_s']:.3f} s, later epochs {r['epoch2_s']:.3f} s"
    for w in r.get("workers") or []:
        if w["peak_rss_mb"] > 100:  # not the resource tracker
            extra += f", worker peak RSS {w['peak_rss_mb']:.0f} MB (PSS {w['pss_mb']:.0f}, private {w['uss_mb']:.0f} MB)"
    return f"{name:38s} {r['rows']:>8d} rows {r['rows_per_s']:>10.0f} rows/s  peak RSS {r['peak_rss_mb']:.0f} MB{extra}"


def _ratios(res: dict) -> None:
    def get(name: str, key: str) -> float | None:
        r = res.get(name)
        if r is None or r.get(key) is None:
            return None
        return r["rows"] / EPOCHS / r[key] if key in ("epoch1_s", "epoch2_s") and r.get("epoch2_s") else r["rows"] / r["seconds"]


    def show(label: str, a: str, ka: str, b: str, kb: str, goal: str) -> None:
        x, y = get(a, ka), get(b, kb)
        if x is not None and y is not None:
            print(f"  {label}: {x / y:.2f}x  ({goal})")

    print("\nratios (rows/s, same run):")
    g, lt, ls = "mmfs global shuffle", "lance torch (batch shuffle)", "lance torch (sequential)"
    show("global shuffle epoch 1 / LanceDataset epoch 1", g, "epoch1_s", lt, "epoch1_s", "goal >= 1.0")
    show("global shuffle later epochs / LanceDataset later epochs (best of 2)", g, "epoch2_s", lt, "epoch2_s", "goal >= 1.5")
    show("global shuffle, 2 workers, epoch 1 / LanceDataset epoch 1", g + ", 2 workers", "epoch1_s", lt, "epoch1_s", "")
    show("global shuffle epoch 1 / lancedb StreamingDataset", g, "epoch1_s", "lancedb StreamingDataset", "seconds", "goal >= 10")
    show("global shuffle, take only / LanceDataset batch shuffle", g + ", take only", "seconds", lt, "seconds", "")
    show("windowed shuffle / LanceDataset sequential", "mmfs windowed shuffle", "seconds", ls, "seconds", "")
    show("sequential / LanceDataset sequential", "mmfs sequential", "seconds", ls, "seconds", "")
    show("global shuffle / webdataset", g, "seconds", "webdataset", "seconds", "")
    show("global shuffle / parquet", g, "seconds", "parquet (pyarrow)", "seconds", "")
    show("big: windowed shuffle / LanceDataset sequential", "big: mmfs windowed shuffle", "seconds",
         "big: lance torch (sequential)", "seconds", "goal >= 0.5")
    show("big: windowed shuffle, 2 workers / LanceDataset sequential", "big: mmfs windowed shuffle, 2 workers", "seconds",
         "big: lance torch (sequential)", "seconds", "")
    show("clips: mmfs / plain PyAV files (2 workers each)", "clips mmfs, 2 workers", "seconds",
         "clips plain PyAV files, 2 workers", "seconds", "")
    show("clips: mmfs keyframe-aligned / plain PyAV files (2 workers each)", "clips mmfs keyframe-aligned, 2 workers", "seconds",
         "clips plain PyAV files, 2 workers", "seconds", "goal >= 1.5")
    if g in res and res[g].get("first_batch_s") is not None:
        print(f"  global shuffle, time to first batch: {res[g]['first_batch_s']:.3f} s  (goal < 0.5 s)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--payload-kb", type=int, default=8)
    ap.add_argument("--big-rows", type=int, default=10_000_000, help="rows of the larger-than-cache table (0: skip)")
    ap.add_argument("--videos", type=int, default=48)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--keep", type=Path, help="build the data here (reused when it exists)")
    ap.add_argument("--only", default="", help="measurement names separated by ';'")
    args = ap.parse_args()
    from bench.loader_data import build_big, build_clips, build_features

    data = args.keep or Path(tempfile.mkdtemp(prefix="mmfs-bench-loader-"))
    data.mkdir(parents=True, exist_ok=True)
    names = [n for n in RUNS if not args.only or n in args.only.split(";")]
    if not args.big_rows:
        names = [n for n in names if not n.startswith("big:")]
    t = time.perf_counter()
    if not (data / "features.lance").exists():
        build_features(data, args.rows, args.payload_kb * 1024)
    if not (data / "clips.lance").exists() and any(n.startswith("clips") for n in names):
        build_clips(data, args.videos, args.seconds)
    if not (data / "big.lance").exists() and any(n.startswith("big:") for n in names):
        build_big(data, args.big_rows)
    print(f"data ready in {time.perf_counter() - t:.0f} s under {data}")
    res = {}
    warmed = None
    for name in names:
        table = data / ("big.lance" if name.startswith("big:") else "features.lance")
        if table != warmed or table.name == "features.lance":  # the big table once: reading 20 GB takes a while
            warm(table)
            warmed = table
        res[name] = measure(name, data)
        print(_line(name, res[name]), flush=True)
    _ratios(res)
    print(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": res}, indent=None))
    if not args.keep:
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
