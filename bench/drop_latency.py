"""How long a small drop takes under `make ui`: `_READY` -> every feature materialized, with the breakdown.

Starts the real `dagster dev` (webserver + daemon, MMFS's sensors and automation, tiny models) on a fresh
home and table, drops ``--videos`` sample videos (the demo's good clips) with `_READY`, and waits, through
GraphQL, until every fill asset of the drop is materialized. Then it reads the runs from the instance and
prints, relative to `_READY`: when each run was created (sensor / automation), started and ended, and each
step's start, end and how long the step's process took to get from launch to its first event (imports).

Each ``--variant`` is measured in the same invocation, one `dagster dev` each, and compared with the first:
- ``spawn``: Dagster's multiprocess executor as shipped (a fresh interpreter per step imports Dagster, torch,
  the models' libraries and the code location);
- ``forkserver``: ``MMFS_STEP_START=forkserver`` (steps fork from a server that imported them once).

Usage: python bench/drop_latency.py [--videos 9] [--variant spawn --variant forkserver]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.measured import expect_count  # noqa: E402

FILLS = ("videos", "video_metadata", "clip_embedding", "depth", "caption", "quality")
MATS = """query($key: [String!]!, $p: [String!]) { assetNodeOrError(assetKey: {path: $key}) {
  ... on AssetNode { assetMaterializations(partitions: $p) { partition runId timestamp } } } }"""


def measure(variant: str, videos: int, tmp: Path) -> dict:
    import dagster as dg

    from mmfs_assets.cli.demo import write_demo_files
    from tests.dagster_server import DagsterDev

    root = tmp / variant
    home = root / "home"
    home.mkdir(parents=True)
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    drops = root / "drops"
    drops.mkdir()
    env = {"DAGSTER_HOME": str(home), "MMFS_TABLE_URI": str(root / "videos.lance"), "MMFS_DROP_DIR": str(drops),
           "MMFS_MODEL_PROFILE": "tiny", "MMFS_MODEL_DIR": str(tmp / "models"), "MMFS_LOCK_DIR": str(root / "locks"),
           "MMFS_STEP_START": variant}
    staging = root / "staging"
    staging.mkdir()
    write_demo_files(staging, n_good=videos - 1, with_bad=False)  # + the 720p clip; the in-drop copy is skipped
    (staging / next(p.name for p in staging.iterdir() if p.name.startswith("copy of"))).unlink()
    expect_count(f"{variant}: videos in the drop", len(list(staging.iterdir())), videos)
    with DagsterDev(env, root / "dagster_dev.log") as server:
        time.sleep(5)  # the daemon's first sensor ticks happen on an idle instance, as after a long quiet spell
        (staging / "_READY").touch()
        ready = time.time()
        staging.rename(drops / "drop-1")
        done: dict[str, float] = {}
        while len(done) < len(FILLS):
            assert time.time() - ready < 900, f"{variant}: not done after 900 s: {sorted(done)}"
            for a in FILLS:
                if a not in done:
                    mats = server.gql(MATS, {"key": [a], "p": ["drop-1"]})["assetNodeOrError"]["assetMaterializations"]
                    if mats:
                        done[a] = float(mats[0]["timestamp"]) / 1000
            time.sleep(0.5)
        total = max(done.values()) - ready
        os.environ["DAGSTER_HOME"] = str(home)
        with dg.DagsterInstance.get() as inst:
            runs = []
            for rec in sorted(inst.get_run_records(), key=lambda r: r.create_timestamp):
                steps = {}
                for e in inst.all_logs(rec.dagster_run.run_id):
                    ev = e.dagster_event
                    if ev is None or not ev.step_key:
                        continue
                    st = steps.setdefault(ev.step_key, {})
                    st.setdefault("first_event", e.timestamp)
                    if ev.event_type_value == "STEP_START":
                        st["start"] = e.timestamp
                    elif ev.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE"):
                        st["end"] = e.timestamp
                    elif ev.event_type_value == "STEP_WORKER_STARTING":
                        st["launch"] = e.timestamp
                runs.append({"id": rec.dagster_run.run_id[:8], "by": rec.dagster_run.tags.get("dagster/sensor_name", "-"),
                             "created": rec.create_timestamp.timestamp(), "start": rec.start_time, "end": rec.end_time,
                             "status": rec.dagster_run.status.value, "steps": steps})
    expect_count(f"{variant}: fill assets materialized", len(done), len(FILLS))
    return {"total": total, "ready": ready, "done": done, "runs": runs}


def report(variant: str, m: dict) -> None:
    t0 = m["ready"]
    print(f"\n{variant}: _READY -> every fill of the drop in {m['total']:.1f} s")
    for a, t in sorted(m["done"].items(), key=lambda kv: kv[1]):
        print(f"  {a:<16} materialized at {t - t0:6.1f} s")
    for r in m["runs"]:
        end = f"{r['end'] - t0:6.1f}" if r["end"] else "     -"
        print(f"  run {r['id']} ({r['by']}, {r['status']}): created {r['created'] - t0:6.1f}  started "
              f"{(r['start'] or 0) - t0:6.1f}  ended {end}")
        for k, st in sorted(r["steps"].items(), key=lambda kv: kv[1].get("first_event", 0)):
            launch = st.get("launch", st.get("first_event"))
            imports = st["start"] - launch if "start" in st and launch else float("nan")
            body = st["end"] - st["start"] if "end" in st and "start" in st else float("nan")
            print(f"    {k:<16} launched {launch - t0:6.1f}  process start + imports {imports:5.1f} s  "
                  f"step {body:5.1f} s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=9)
    ap.add_argument("--variant", action="append", choices=["spawn", "forkserver"])
    args = ap.parse_args()
    variants = args.variant or ["spawn", "forkserver"]
    tmp = Path(tempfile.mkdtemp(prefix="mmfs-latency-"))
    try:
        results = {v: measure(v, args.videos, tmp) for v in variants}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for v, m in results.items():
        report(v, m)
    base = results[variants[0]]["total"]
    print(f"\n{args.videos} videos, {os.cpu_count()} CPUs: _READY -> every feature")
    for v, m in results.items():
        print(f"  {v:<11} {m['total']:6.1f} s  ({base / m['total']:.2f}x the speed of {variants[0]})")


if __name__ == "__main__":
    main()
