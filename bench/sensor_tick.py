"""Drop sensor tick time against the number of objects under an ``s3://`` drop prefix (moto on 127.0.0.1).

For 1k and 10k objects (drops of ``--per-drop`` objects each, every one with ``_READY``) the real
``drop_sensor`` body is evaluated (``build_sensor_context``, an ephemeral instance) in the situations a
daemon meets:

- ``first``: nothing registered yet, every drop is new (one listing of names plus a HEAD per drop);
- ``steady``: every drop registered, the cursor after the last one (the tick every 15 s);
- ``new drop``: one new drop since the last tick;
- ``full``: the periodic full listing of names (every 5 minutes), every drop registered;

against the alternative measured in the same run, a sensor without delimiter or cursor that lists every
object under the prefix each tick to find the drops (``list all objects``).

Usage: python bench/sensor_tick.py [--sizes 1000 10000] [--per-drop 100] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.measured import expect_count  # noqa: E402
from tests.moto_server import moto_s3  # noqa: E402


def timed(fn, repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t)
    return statistics.median(runs) * 1000


def measure(n: int, per_drop: int, repeat: int) -> tuple:
    """(objects, drops, first, steady, new drop, full, list all objects) in ms for ``n`` objects."""
    import dagster as dg

    from mmfs_assets.definitions import defs
    from mmfs_assets.defs.ingest.drop_sensor import drop_sensor
    from mmfs_assets.ingest.object_drops import FULL_LIST_INTERVAL_S
    from mmfs_assets.ingest.s3_client import s3_client
    from mmfs_assets.resources import DropFolderResource

    with moto_s3("mmfs") as opts:
        client = s3_client(opts)
        drops = [f"2026-{i:05d}" for i in range(max(1, n // per_drop))]
        keys = [f"incoming/{d}/v{j:04d}.mp4" for d in drops for j in range(per_drop - 1)]
        keys += [f"incoming/{d}/_READY" for d in drops]
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda k: client.put_object(Bucket="mmfs", Key=k, Body=b"x"), keys))
        resource = DropFolderResource(root="s3://mmfs/incoming/", quiet_seconds=60, storage_options=opts)

        def tick(instance, cursor):
            ctx = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs,
                                          resources={"drop_folder": resource})
            return drop_sensor(ctx)

        def list_everything():
            found = set()
            for page in client.get_paginator("list_objects_v2").paginate(Bucket="mmfs", Prefix="incoming/"):
                found.update(o["Key"].split("/")[1] for o in page.get("Contents", []))
            return found

        with dg.DagsterInstance.ephemeral() as instance:
            first = timed(lambda: tick(instance, None), repeat)
            r = tick(instance, None)
            expect_count(f"drops the first tick found ({n} objects)", len(r.run_requests), len(drops))
            instance.add_dynamic_partitions("drops", drops)
            steady_cursor = tick(instance, r.cursor).cursor
            steady = timed(lambda: tick(instance, steady_cursor), repeat)
            state = json.loads(steady_cursor)
            state["scan"]["full_at"] -= FULL_LIST_INTERVAL_S + 1
            stale = json.dumps(state)
            full = timed(lambda: tick(instance, stale), repeat)
            client.put_object(Bucket="mmfs", Key="incoming/2027-new/v.mp4", Body=b"x")
            client.put_object(Bucket="mmfs", Key="incoming/2027-new/_READY", Body=b"")
            new = timed(lambda: tick(instance, steady_cursor), repeat)
            assert [q.partition_key for q in tick(instance, steady_cursor).run_requests] == ["2027-new"]
        naive = timed(list_everything, repeat)
        expect_count("drops found by listing every object", len(list_everything()), len(drops) + 1)
        return len(keys) + 2, len(drops), first, steady, new, full, naive


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--per-drop", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    rows = [measure(n, args.per_drop, args.repeat) for n in args.sizes]
    print(f"drop sensor tick, median of {args.repeat} (ms); moto S3 on 127.0.0.1; {args.per_drop} objects per drop")
    print(f"{'objects':>8} {'drops':>6} {'first':>9} {'steady':>8} {'new drop':>9} {'full':>8} "
          f"{'list all objects':>17} {'steady vs list-all':>19}")
    for objs, nd, first, steady, new, full, naive in rows:
        print(f"{objs:>8} {nd:>6} {first:>9.1f} {steady:>8.1f} {new:>9.1f} {full:>8.1f} {naive:>17.1f} "
              f"{naive / steady:>18.1f}x")


if __name__ == "__main__":
    main()
