"""Fleet-scale fills: the ``ray`` engine's replicas and shards against the ``local`` engine, in one run.

A table of ``--videos`` unique videos (a real 1280x720 8 s H.264 clip with one keyframe, made unique by a
suffix, ingested with ``--fragment-rows`` rows per fragment and described) gets the tiny CLIP embedding
(``MMFS_MODEL_PROFILE=tiny``, ``exact`` sampling: the model is cheap and every frame is decoded from the
keyframe before it, so the fill is decode-bound) on copies of the same table:

1. ``local``: today's engine in this process, 1 decode worker, then 2 (all cores);
2. ``ray``, 1 replica of 1 CPU (1 decode worker), against local with the same worker: the shard machinery's cost;
3. ``ray``, 2 replicas of 1 CPU each: the speed-up of a second replica (target >= 1.7x over 1 replica);
4. ``ray``, 2 replicas, shards of 1, 4 and 16 fragments: where the fixed cost per shard stops mattering.

Ray runs as a cluster would: started once (its start is printed apart), each fill starting its replicas
(imports, model load) inside its own time. "fill s" is the whole ``fill_partitions`` call; "steady" is the
time after the replicas were ready (the driver's log), the comparison for long fills. Peak RSS is the whole
process tree's (this process, Ray's daemons, the replicas and their decode workers), sampled every 0.2 s.

Usage: python bench/scale.py [--videos 256] [--fragment-rows 4] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("LANCE_LOG", "error")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.ingest_metadata import make_drop  # noqa: E402
from bench.measured import expect_count  # noqa: E402
from mmfs_assets import samples  # noqa: E402
from mmfs_assets.engine.engines import fill_partitions  # noqa: E402
from mmfs_assets.engine.fill_options import FillOptions, ModelSettings  # noqa: E402
from mmfs_assets.engine.ray_cluster import ray_session  # noqa: E402
from mmfs_assets.features import discover  # noqa: E402
from mmfs_assets.features.models import load_model, model_context  # noqa: E402
from mmfs_assets.ingest.describe import describe_partition  # noqa: E402
from mmfs_assets.ingest.ingest_drop import ingest_drop  # noqa: E402
from mmfs_assets.settings import Settings  # noqa: E402
from mmfs_loader.contract.table import TableRef  # noqa: E402

FEATURE = {f.name: f for f in discover()}["clip_embedding"]


def make_table(root: Path, videos: int, fragment_rows: int) -> str:
    drop = make_drop(root, videos, 0, samples.Spec("clip.mp4", 1280, 720, 30, 8.0, gop=240, options={"preset": "ultrafast"}))
    uri = str(root / "base.lance")
    ingest_drop(drop, "bench", uri, properties={}, fragment_rows=fragment_rows)
    describe_partition(uri, "bench", properties={})
    return uri


class PeakRss:
    """Peak summed RSS of this process and all its descendants (Ray's raylet, workers, decode workers)."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _tree(self) -> list[int]:
        kids: dict[int, list[int]] = {}
        for p in Path("/proc").iterdir():
            if p.name.isdigit():
                try:
                    ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                kids.setdefault(ppid, []).append(int(p.name))
        out, todo = [], [os.getpid()]
        while todo:
            pid = todo.pop()
            out.append(pid)
            todo += kids.get(pid, [])
        return out

    def _rss(self) -> int:
        total = 0
        for pid in self._tree():
            try:
                total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            except (OSError, IndexError, ValueError):
                pass
        return total

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.peak = max(self.peak, self._rss())

    def __enter__(self) -> PeakRss:
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()


def run(base: str, root: Path, name: str, engine: str, model_dir: str, workers: int, env: dict[str, str], videos: int) -> dict:
    uri = str(root / f"{name}.lance")
    shutil.copytree(base, uri)
    settings = Settings.from_env({"MMFS_FILL_ENGINE": engine, **env})
    ready: list[float] = []

    def log(msg: str) -> None:
        if "models loaded" in msg or "decoding with" in msg:
            ready.append(time.perf_counter())

    t0 = time.perf_counter()
    with PeakRss() as rss:
        out = fill_partitions(TableRef(uri), FEATURE, ["bench"], engine=engine, settings=settings, log=log,
                              models=ModelSettings("tiny", model_dir, "cpu", {"MMFS_CLIP_SAMPLING": "exact"}),
                              options=FillOptions({"mmfs.asset": "bench"}, decode_workers=workers))
    total = time.perf_counter() - t0
    rep = out.reports["bench"]
    if out.problems:
        raise RuntimeError(f"{name}: {out.problems}")
    expect_count(f"{name}: videos embedded ({rep.rows_errored} errored)", rep.rows_computed, videos)
    steady = total - ((ready[0] - t0) if ready else 0.0)
    shutil.rmtree(uri)
    return {"name": name, "rows": rep.rows_written, "shards": rep.shards, "replicas": rep.replicas,
            "fill_s": round(total, 2), "steady_s": round(steady, 2), "videos_per_s": round(rep.rows_written / total, 2),
            "steady_videos_per_s": round(rep.rows_written / steady, 2), "peak_rss_mb": rss.peak >> 20}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=96)
    ap.add_argument("--fragment-rows", type=int, default=4)
    ap.add_argument("--quick", action="store_true", help="32 videos, 2 rows per fragment: a smoke run")
    a = ap.parse_args()
    if a.quick:
        a.videos, a.fragment_rows = 32, 2
    root = Path(tempfile.mkdtemp(prefix="mmfs-scale-"))
    model_dir = str(root / "models")
    try:
        t = time.perf_counter()
        base = make_table(root, a.videos, a.fragment_rows)
        print(f"table: {a.videos} videos, {a.fragment_rows} rows per fragment ({time.perf_counter() - t:.1f} s to build)")
        load_model(FEATURE, model_context(FEATURE, profile="tiny", model_dir=model_dir, device="cpu", env={}))  # warm-up:
        # the tiny model is written once and open_clip imported here, not inside the first timed fill
        rows = [run(base, root, "local, 1 decode worker", "local", model_dir, 1, {}, a.videos),
                run(base, root, "local, 2 decode workers", "local", model_dir, 2, {}, a.videos)]
        t = time.perf_counter()
        with ray_session(Settings.from_env({})):
            print(f"local Ray started in {time.perf_counter() - t:.1f} s (once; a cluster is already running)")
            one = {"MMFS_RAY_REPLICAS": "1", "MMFS_RAY_CPUS_PER_REPLICA": "1"}
            two = {"MMFS_RAY_REPLICAS": "2", "MMFS_RAY_CPUS_PER_REPLICA": "1"}
            rows.append(run(base, root, "ray, 1 replica", "ray", model_dir, 0, one, a.videos))
            rows.append(run(base, root, "ray, 2 replicas", "ray", model_dir, 0, two, a.videos))
            for size in (1, 4, 16):
                rows.append(run(base, root, f"ray, 2 replicas, {size}-fragment shards", "ray", model_dir, 0,
                                {**two, "MMFS_FILL_FRAGMENTS_PER_SHARD": str(size)}, a.videos))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"\n{'fill':44} {'rows':>5} {'shards':>6} {'fill s':>7} {'videos/s':>9} {'steady s':>9} {'steady v/s':>10} {'peak RSS':>9}")
    for r in rows:
        print(f"{r['name']:44} {r['rows']:5d} {r['shards']:6d} {r['fill_s']:7.2f} {r['videos_per_s']:9.2f} "
              f"{r['steady_s']:9.2f} {r['steady_videos_per_s']:10.2f} {r['peak_rss_mb']:7d} MB")
    by = {r["name"]: r for r in rows}

    def ratio(a_: str, b_: str, key: str) -> float:
        return round(by[a_][key] / by[b_][key], 2)

    print("\nratios (videos/s; whole fill, then steady state)")
    for label, x, y in (("2 replicas / 1 replica (target >= 1.7)", "ray, 2 replicas", "ray, 1 replica"),
                        ("ray 1 replica / local 1 worker (target >= 0.9)", "ray, 1 replica", "local, 1 decode worker"),
                        ("ray 2 replicas / local 2 workers", "ray, 2 replicas", "local, 2 decode workers")):
        print(f"  {label:50} {ratio(x, y, 'videos_per_s'):5.2f}  {ratio(x, y, 'steady_videos_per_s'):5.2f}")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
