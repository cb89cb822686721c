"""Many writers on the one table at the same instant: the harness of the load test and bench/writers.py.

A round starts N writer processes (spawned) that wait on one barrier and then commit together, each
through the product's write paths: column fills with ``replace_columns`` (DataReplacement, what every
feature fill commits) of different column groups and partitions, two of them on the same group and
partition (a real conflict: one must retry), and ingest appends with ``append_rows``. Every writer
reports its commit retries. :func:`check` then reads the table back: every fill of the round is there
with the round's values, every append's rows are there, nothing else moved.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
from lance.blob import blob_array

from mmfs_loader.contract import schema as S

GROUPS = [S.ColumnGroup(f"load_g{i}", (pa.field(f"load_g{i}", pa.float64()),)) for i in range(3)]
PARTITIONS = [f"p{i}" for i in range(4)]


@dataclass(frozen=True)
class Job:
    kind: str  # "fill" or "append"
    uri: str
    options: dict | None
    round: int
    group: int = 0
    partition: str = ""
    rows: int = 0


def _ref(uri: str, options: dict | None):
    from mmfs_loader.contract.table import TableRef

    return TableRef(uri, options)


def ingest_rows(drop: str, n: int, tag: str) -> pa.Table:
    now = datetime.now(UTC)
    ids = [f"{tag}-{i}" for i in range(n)]
    return pa.table({
        S.ID: ids, S.DROP_ID: [drop] * n, S.SOURCE_URI: [None] * n, S.FILE_NAME: [f"{i}.mp4" for i in ids],
        S.SIZE_BYTES: [4] * n, S.INGESTED_AT: [now] * n, S.VIDEO_STORAGE: ["inline"] * n,
        S.VIDEO: blob_array([b"load"] * n),
    }).cast(S.INGEST_SCHEMA)


def setup(uri: str, options: dict | None, rows_per_partition: int = 16, fragment_rows: int = 4) -> None:
    """The table: PARTITIONS of small fragments, and the GROUPS' columns declared."""
    from mmfs_assets.table import open_or_create
    from mmfs_assets.table.append import append_rows
    from mmfs_assets.table.columns import ensure_group_columns

    ref = _ref(uri, options)
    open_or_create(ref)
    for p in PARTITIONS:
        append_rows(ref, ingest_rows(p, rows_per_partition, f"base-{p}"), {"mmfs.asset": "videos"}, fragment_rows=fragment_rows)
    for g in GROUPS:
        ensure_group_columns(ref, g)


def value(round_: int, group: int) -> float:
    return round_ * 10.0 + group


def run_job(job: Job, barrier) -> dict:
    """One writer: wait for the others, then commit; returns its retries and seconds."""
    import lance

    from mmfs_assets.table.append import append_rows
    from mmfs_assets.table.replace import ROWID, replace_columns
    from mmfs_loader.contract.sql import equals

    ref = _ref(job.uri, job.options)
    retries = []
    if job.kind == "fill":
        ds = lance.dataset(job.uri, storage_options=job.options)
        ids = ds.to_table(columns=[], filter=equals(S.DROP_ID, job.partition), with_row_id=True)[ROWID]
        col = GROUPS[job.group].value_columns[0]
        values = pa.table({ROWID: ids, col: pa.array(np.full(len(ids), value(job.round, job.group)))})
    barrier.wait(120)
    t0 = time.perf_counter()
    if job.kind == "fill":
        rep = replace_columns(ref, values, locate_filter=equals(S.DROP_ID, job.partition),
                              properties={"mmfs.asset": f"load_g{job.group}", "mmfs.partition": job.partition})
        retries.extend(range(rep.attempts - 1))
        rows = rep.rows
    else:
        append_rows(ref, ingest_rows(job.partition, job.rows, f"r{job.round}-{job.partition}"),
                    {"mmfs.asset": "videos", "mmfs.partition": job.partition}, fragment_rows=4,
                    on_retry=lambda n, e: retries.append(n))
        rows = job.rows
    return {"kind": job.kind, "retries": len(retries), "seconds": time.perf_counter() - t0, "rows": rows}


def round_jobs(uri: str, options: dict | None, round_: int, writers: int = 8) -> list[Job]:
    """``writers`` jobs: fills of (group, partition) pairs, the first pair twice (a same-column conflict),
    and, from 4 writers up, two appends of new drops."""
    appends = 2 if writers >= 4 else 0
    fills = writers - appends
    pairs = [(g, PARTITIONS[(round_ + i) % len(PARTITIONS)]) for i in range(len(PARTITIONS)) for g in range(len(GROUPS))]
    chosen = ([pairs[0]] + pairs[: fills - 1]) if fills >= 2 and writers >= 4 else pairs[:fills]
    jobs = [Job("fill", uri, options, round_, g, p) for g, p in chosen]
    jobs += [Job("append", uri, options, round_, partition=f"new-{round_}-{k}", rows=3) for k in range(appends)]
    return jobs


def check(uri: str, options: dict | None, jobs: list[Job], expected: dict) -> None:
    """Every fill and append of the round is in the table; earlier values where nobody wrote this round.
    ``expected`` ((group, partition) -> value, drop -> rows) is updated with this round's writes."""
    import lance

    for j in jobs:
        if j.kind == "fill":
            expected[(j.group, j.partition)] = value(j.round, j.group)
        else:
            expected[j.partition] = j.rows
    ds = lance.dataset(uri, storage_options=options)
    t = ds.to_table(columns=[S.DROP_ID] + [g.value_columns[0] for g in GROUPS]).to_pydict()
    drops = t[S.DROP_ID]
    counts: dict[str, int] = {}
    for d in drops:
        counts[d] = counts.get(d, 0) + 1
    for key, want in expected.items():
        if isinstance(key, tuple):
            g, p = key
            got = [v for d, v in zip(drops, t[GROUPS[g].value_columns[0]]) if d == p]
            assert got and all(v == want for v in got), (key, want, got)
        else:
            assert counts.get(key) == want, (key, want, counts.get(key))


def run_rounds(uri: str, options: dict | None, rounds: int, writers: int) -> dict:
    """``rounds`` rounds of ``writers`` concurrent writers, checked after each; totals for the report."""
    ctx = mp.get_context("spawn")
    expected: dict = {}
    totals = {"commits": 0, "retries": 0, "rows": 0, "seconds": 0.0, "max_retries": 0}
    with ctx.Manager() as manager, ctx.Pool(writers) as pool:
        for r in range(rounds):
            jobs = round_jobs(uri, options, r, writers)
            barrier = manager.Barrier(len(jobs))
            t0 = time.perf_counter()
            results = pool.starmap(run_job, [(j, barrier) for j in jobs])
            totals["seconds"] += time.perf_counter() - t0
            check(uri, options, jobs, expected)
            totals["commits"] += len(results)
            totals["retries"] += sum(x["retries"] for x in results)
            totals["max_retries"] = max(totals["max_retries"], *(x["retries"] for x in results))
            totals["rows"] += sum(x["rows"] for x in results)
    return totals
