"""Soak: fifty drops through the drop sensor and the automation, the table and the drops on an S3 server.

`dagster dev` (webserver + daemon, multiprocess runs) and moto run on 127.0.0.1 (``tests/s3_pipeline.py``,
the harness of ``tests/test_e2e_s3.py``). Drops of ``--videos`` small distinct videos are uploaded in waves
of ``--wave`` every ``--every`` seconds, each complete when its ``_READY`` lands. The soak passes when every
drop has every asset (ingest, metadata, four features, near-duplicate groups, statistics), every run
succeeded, every row holds a value or an error in every group, one producer per group, and the storage
credentials are nowhere under ``$DAGSTER_HOME`` nor in what the UI serves.

Prints: the time until each asset covered every drop, runs by outcome, per-drop latency from ``_READY``
to its last asset (median, p95, max), and the CPU each long-lived process used.

Usage: python bench/soak.py [--drops 50] [--videos 2] [--wave 10] [--every 30] [--timeout 5400]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.measured import expect_count  # noqa: E402
from tests.s3_pipeline import ASSETS, FEATURES, KEY_ID, SECRET, TABLE_URI, files_holding, s3_pipeline  # noqa: E402

LATEST = """query($key: [String!]!) { assetNodeOrError(assetKey: {path: $key}) { ... on AssetNode {
  assetMaterializations(limit: 1000) { partition timestamp } } } }"""


def make_videos(root: Path, drops: int, per_drop: int) -> dict[str, list[Path]]:
    from mmfs_assets import samples

    out: dict[str, list[Path]] = {}
    for d in range(drops):
        name = f"soak-{d:03d}"
        (root / name).mkdir(parents=True)
        out[name] = []
        for j in range(per_drop):  # distinct sizes and lengths: identical files would be one row
            spec = samples.Spec(f"v{j}.mp4", 64 + 16 * j, 48 + 2 * (d % 20), 12, 1.0 + d / 100)
            out[name].append(samples.write_video(root / name / spec.name, spec))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--drops", type=int, default=50)
    ap.add_argument("--videos", type=int, default=2)
    ap.add_argument("--wave", type=int, default=10)
    ap.add_argument("--every", type=float, default=30.0)
    ap.add_argument("--timeout", type=float, default=5400.0)
    args = ap.parse_args()
    import lance

    tmp = Path(tempfile.mkdtemp(prefix="mmfs-soak-"))
    videos = make_videos(tmp / "videos", args.drops, args.videos)
    model_dir = tmp / "models"  # tiny random-init models are written there on first use
    ready_at: dict[str, float] = {}
    with s3_pipeline(tmp, model_dir, {"MMFS_CLIP_FRAMES": "2", "MMFS_DEPTH_FRAMES": "1"}) as p:
        t0 = time.time()
        names = sorted(videos)
        for i in range(0, len(names), args.wave):
            for name in names[i:i + args.wave]:
                p.upload_drop(name, videos[name])
                ready_at[name] = time.time()
            print(f"{time.time() - t0:6.0f}s uploaded {min(i + args.wave, len(names))}/{len(names)} drops", flush=True)
            if i + args.wave < len(names):
                time.sleep(args.every)
        filled = p.wait_filled(len(names), timeout=args.timeout, log=tmp / "dagster_dev.log",
                               progress=lambda s, c: print(f"{time.time() - t0:6.0f}s drops done per asset: {c}", flush=True))
        runs = p.wait_runs_finished(300)
        total = time.time() - t0
        last: dict[str, float] = {}
        for a in ASSETS:
            for m in p.server.gql(LATEST, {"key": [a]})["assetNodeOrError"]["assetMaterializations"]:
                last[m["partition"]] = max(last.get(m["partition"], 0.0), float(m["timestamp"]) / 1000)
        latency = sorted(last[n] - ready_at[n] for n in names)
        ds = lance.dataset(TABLE_URI, storage_options=p.options)
        cols = [f"{g}_{s}" for g in FEATURES for s in ("producer", "error")]
        t = ds.to_table(columns=["drop_id", "metadata_error", *cols]).to_pylist()
        missing = [(r["drop_id"], g) for r in t for g in FEATURES
                   if r["metadata_error"] is None and not (r[f"{g}_producer"] or r[f"{g}_error"])]
        producers = {g: {r[f"{g}_producer"] for r in t if r[f"{g}_producer"]} for g in FEATURES}
        leaks = files_holding(p.home, [SECRET, KEY_ID]) + [s for s in (SECRET, KEY_ID) if s in p.ui_text()]
    by_status: dict[str, int] = {}
    for r in runs:
        by_status[r["status"]] = by_status.get(r["status"], 0) + 1
    print(f"\nsoak: {len(names)} drops x {args.videos} videos, waves of {args.wave} every {args.every:g}s; "
          f"table and drops on moto S3; tiny models")
    print(f"  all assets on all drops after {total:.0f}s from the first upload")
    print("  each asset complete after: " + ", ".join(f"{a} {s:.0f}s" for a, s in filled.items()))
    print(f"  runs: {len(runs)} ({by_status}); rows: {len(t)} in {len({r['drop_id'] for r in t})} drops")
    print(f"  per-drop latency, _READY -> last asset: median {statistics.median(latency):.0f}s, "
          f"p95 {latency[int(0.95 * (len(latency) - 1))]:.0f}s, max {latency[-1]:.0f}s")
    print(f"  rows without a value or error in a group: {len(missing)}; producers per group: "
          f"{ {g: len(v) for g, v in producers.items()} }; secrets found: {len(leaks)}")
    expect_count("rows in the table (drops x videos)", len(t), len(names) * args.videos)
    ok = (by_status == {"SUCCESS": len(runs)} and not missing and all(len(v) == 1 for v in producers.values())
          and not leaks and len({r["drop_id"] for r in t}) == len(names))
    print("  PASSED" if ok else "  FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
