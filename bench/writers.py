"""Concurrent writers: commit throughput and retry rate with 1, 4 and 8 writers committing at the same instant.

Each round starts W spawned writers that wait on one barrier and commit together through the product's
write paths (``replace_columns`` column fills of 16-row partitions, one pair per round on the same column and
partition, and from 4 writers two ``append_rows`` of new drops); the table is checked after every round
(tests/load_writers.py, the same harness as the load test). Reported per W: commits/s and rows/s of the
rounds (barrier to last commit), retries per commit, and the ratio against 1 writer; on local disk and on an
S3-compatible server (moto) started on 127.0.0.1.
Usage: python bench/writers.py [--rounds 10] [--writers 1,4,8] [--no-s3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("LANCE_LOG", "error")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.measured import expect_count  # noqa: E402
from tests.load_writers import round_jobs, run_rounds, setup  # noqa: E402
from tests.moto_server import moto_s3  # noqa: E402

ROWS = 16  # rows per partition: what each column fill of a round rewrites


def measure(where: str, make_uri, options, writers: list[int], rounds: int) -> None:
    print(f"\n== {where}: {rounds} rounds per row")
    print(f"{'writers':>7} {'commits':>7} {'retries/commit':>14} {'max':>4} {'commits/s':>9} {'rows/s':>8} {'vs 1 writer':>11}")
    base = None
    for w in writers:
        uri = make_uri(w)
        setup(uri, options, rows_per_partition=ROWS)
        t = run_rounds(uri, options, rounds, w)
        jobs = [j for r in range(rounds) for j in round_jobs(uri, options, r, w)]
        expect_count(f"commits of {w} writers", t["commits"], len(jobs))
        expect_count(f"rows committed by {w} writers", t["rows"], sum(j.rows if j.kind == "append" else ROWS for j in jobs))
        cps = t["commits"] / t["seconds"]
        base = base or cps
        print(f"{w:>7} {t['commits']:>7} {t['retries'] / t['commits']:>14.2f} {t['max_retries']:>4} {cps:>9.1f} "
              f"{t['rows'] / t['seconds']:>8.0f} {cps / base:>10.2f}x", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--writers", default="1,4,8")
    ap.add_argument("--no-s3", action="store_true")
    args = ap.parse_args()
    writers = [int(x) for x in args.writers.split(",")]
    with tempfile.TemporaryDirectory() as d:
        measure("local disk", lambda w: f"{d}/w{w}.lance", None, writers, args.rounds)
    if not args.no_s3:
        with moto_s3("bench") as opts:
            measure("S3 server (moto on 127.0.0.1)", lambda w: f"s3://bench/w{w}.lance", opts, writers, args.rounds)


if __name__ == "__main__":
    main()
