"""Search and lookup indices: the production index settings against exact search and unindexed scans.

For each size (default 100k and 1M rows x 512-d float32, clustered like embeddings of similar videos,
L2-normalised; 1,000 rows per drop; 8-word captions):
  vector    IVF_PQ built by ``ensure_search_indices`` (cosine, ``ivf_pq_params``), queried through
            ``mmfs_assets.store.search.nearest`` with several (nprobes, refine_factor): recall@10
            against exact search (numpy brute force) and per-query latency (median, p95, 200 queries);
            against the same query with ``use_index=False`` (Lance's exact scan).
  caption   full-text (inverted index) query latency against a ``caption LIKE '%word%'`` scan.
  lookups   a fill's row lookup (``drop_id = X``, row ids and addresses) and an ``id = X`` lookup with the
            BITMAP/BTREE indices against the same scans with ``use_scalar_index=False``.
Usage: python bench/search.py [--rows 100000,1000000] [--dir /work/benchdata/search] [--queries 200] [--reuse]
(--reuse: query the tables and indices a previous run built instead of building them again)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("LANCE_LOG", "error")  # before lance is imported: its deprecation notes flood the output
import lance  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.measured import NotMeasured, expect_count  # noqa: E402
from mmfs_assets.store.search import NPROBES, REFINE_FACTOR, Query, nearest  # noqa: E402
from mmfs_assets.table.indices import ensure_scalar_indices, ensure_search_indices  # noqa: E402
from mmfs_loader.contract import schema as S  # noqa: E402
from mmfs_loader.contract.sql import equals  # noqa: E402
from mmfs_loader.contract.table import TableRef  # noqa: E402

DIM = 512
CENTERS = 2000
NOISE = 0.8  # per dimension, against centres of unit variance: clusters that overlap, like real embeddings
ROWS_PER_DROP = 1000
WORDS = [f"w{i}" for i in range(2000)]
GROUP_META = {S.GROUP_KEY: b"clip_embedding"}


def vectors(rng: np.random.Generator, centers: np.ndarray, n: int) -> np.ndarray:
    v = centers[rng.integers(0, len(centers), n)] + rng.normal(0, NOISE, (n, DIM)).astype(np.float32)
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def build(uri: str, rows: int, centers: np.ndarray) -> np.ndarray:
    """Write the table in 100k-row batches; returns all vectors (for the exact ground truth)."""
    rng = np.random.default_rng(1)
    schema = pa.schema([
        pa.field(S.ID, pa.string()), pa.field(S.DROP_ID, pa.string()), pa.field(S.FILE_NAME, pa.string()),
        pa.field("clip_embedding", pa.list_(pa.float32(), DIM), metadata=GROUP_META),
        pa.field("clip_embedding_producer", pa.string(), metadata=GROUP_META),
        pa.field("caption", pa.string(), metadata={S.GROUP_KEY: b"caption"}),
    ])
    allv = np.empty((rows, DIM), np.float32)

    def batches():
        for start in range(0, rows, 100_000):
            n = min(100_000, rows - start)
            v = vectors(rng, centers, n)
            allv[start:start + n] = v
            ids = [f"{i:012x}" for i in range(start, start + n)]
            caps = [" ".join(rng.choice(WORDS, 8)) for _ in range(n)]
            yield pa.record_batch([
                pa.array(ids), pa.array([f"d{i // ROWS_PER_DROP:05d}" for i in range(start, start + n)]),
                pa.array([f"v{i}.mp4" for i in range(start, start + n)]),
                pa.FixedSizeListArray.from_arrays(pa.array(v.ravel()), DIM), pa.array(["p"] * n), pa.array(caps),
            ], schema=schema)

    lance.write_dataset(pa.RecordBatchReader.from_batches(schema, batches()), uri, schema=schema,
                        max_rows_per_file=50_000, enable_stable_row_ids=True)
    return allv


def exact_top(allv: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    sims = np.concatenate([allv[i:i + 200_000] @ q.T for i in range(0, len(allv), 200_000)])
    return np.argsort(-sims, axis=0)[:k].T


def timed(fn, reps: int) -> tuple[float, float, list]:
    out, lat = [], []
    for i in range(reps):
        t = time.perf_counter()
        out.append(fn(i))
        lat.append(time.perf_counter() - t)
    lat.sort()
    return statistics.median(lat) * 1e3, lat[int(len(lat) * 0.95) - 1] * 1e3, out


def run(rows: int, root: Path, n_queries: int, reuse: bool = False) -> dict:
    uri = str(root / f"t{rows}.lance")
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 1, (CENTERS, DIM)).astype(np.float32)
    res: dict = {"rows": rows}
    if reuse and Path(uri).is_dir():
        ds = lance.dataset(uri)
        t = ds.to_table(columns=["clip_embedding"])["clip_embedding"].combine_chunks()
        allv = t.flatten().to_numpy().reshape(-1, DIM)  # in id order: written in order, never compacted
        res.update({"write_s": None, "scalar_index_s": None, "vector_and_fts_index_s": None,
                    "indices": [d.name for d in ds.describe_indices()]})
    else:
        shutil.rmtree(uri, ignore_errors=True)
        t0 = time.perf_counter()
        allv = build(uri, rows, centers)
        res["write_s"] = round(time.perf_counter() - t0, 1)
        ref = TableRef(uri)
        t0 = time.perf_counter()
        ensure_scalar_indices(ref)
        res["scalar_index_s"] = round(time.perf_counter() - t0, 1)
        t0 = time.perf_counter()
        rep = ensure_search_indices(ref, vector_min_rows=1)
        res["vector_and_fts_index_s"] = round(time.perf_counter() - t0, 1)
        res["indices"] = rep.created
    ds = lance.dataset(uri)
    expect_count(f"rows of {uri}", ds.count_rows(), rows)
    expect_count(f"vectors of {uri}", len(allv), rows)
    qs = vectors(np.random.default_rng(7), centers, n_queries)
    truth = exact_top(allv, qs, 10)
    ids = np.array([f"{i:012x}" for i in range(rows)])
    res["vector"] = []
    for nprobes, refine in ((16, 10), (64, 10), (16, 50), (NPROBES, REFINE_FACTOR), (64, 50), (64, 100)):
        q = Query(k=10, nprobes=nprobes, refine_factor=refine)
        med, p95, hits = timed(lambda i, q=q: nearest(ds, "clip_embedding", qs[i], q), n_queries)
        expect_count(f"IVF_PQ queries answered with 10 hits (nprobes={nprobes}, refine={refine})",
                     sum(len(h) == 10 for h in hits), n_queries)
        recall = np.mean([len({h["id"] for h in hs} & set(ids[truth[i]])) / 10 for i, hs in enumerate(hits)])
        res["vector"].append({"nprobes": nprobes, "refine_factor": refine, "default": (nprobes, refine) == (NPROBES, REFINE_FACTOR),
                              "recall_at_10": round(float(recall), 4), "median_ms": round(med, 2),
                              "p95_ms": round(p95, 2)})
    reps = max(5, n_queries // 10)
    med, p95, hits = timed(lambda i: nearest(ds, "clip_embedding", qs[i], Query(k=10), exact=True), reps)
    expect_count("exact queries answered with 10 hits", sum(len(h) == 10 for h in hits), reps)
    recall = np.mean([len({h["id"] for h in hs} & set(ids[truth[i]])) / 10 for i, hs in enumerate(hits)])
    res["exact"] = {"recall_at_10": round(float(recall), 4), "median_ms": round(med, 2), "p95_ms": round(p95, 2)}
    words = [WORDS[i] for i in np.random.default_rng(3).integers(0, len(WORDS), reps)]
    med_fts, _, fts = timed(lambda i: ds.to_table(columns=[S.ID, "caption", "_score"], full_text_query=words[i], limit=10,
                                                  disable_scoring_autoprojection=True), reps)
    # without the index every caption is read to find (and rank) the matches
    med_like, _, like = timed(lambda i: ds.to_table(columns=[S.ID], filter=f"caption LIKE '%{words[i]}%'"), reps)
    expect_count("caption queries answered", len(fts) + len(like), 2 * reps)
    if not any(t.num_rows for t in fts) or not any(t.num_rows for t in like):
        raise NotMeasured(f"caption queries: no query found its word (full text: {sum(t.num_rows for t in fts)} rows, "
                          f"LIKE: {sum(t.num_rows for t in like)} rows)")
    res["caption"] = {"fts_median_ms": round(med_fts, 2), "like_scan_median_ms": round(med_like, 2)}
    drops = [f"d{i:05d}" for i in np.random.default_rng(4).integers(0, rows // ROWS_PER_DROP, reps)]

    def lookup(i: int, use: bool):
        sc = ds.scanner(columns=[], filter=equals(S.DROP_ID, drops[i]), with_row_id=True, with_row_address=True,
                        use_scalar_index=use)
        return sc.to_table().num_rows

    res["lookups"] = {}
    for name, fn in (("drop", lookup), ("id", lambda i, use: ds.scanner(
            columns=[S.ID], filter=equals(S.ID, ids[i * 7 % rows]), use_scalar_index=use).to_table().num_rows)):
        with_ix, _, n1 = timed(lambda i, fn=fn: fn(i, True), reps)
        without, _, n2 = timed(lambda i, fn=fn: fn(i, False), reps)
        assert n1 == n2, (name, n1, n2)
        want = ROWS_PER_DROP if name == "drop" else 1
        expect_count(f"{name} lookups that found their {want} row(s)", sum(n == want for n in n1), reps)
        res["lookups"][name] = {"indexed_median_ms": round(with_ix, 2), "scan_median_ms": round(without, 2),
                                "rows": n1[0]}
    return res


def report(r: dict) -> None:
    built = (f"write {r['write_s']} s, scalar indices {r['scalar_index_s']} s, IVF_PQ + caption FTS "
             f"{r['vector_and_fts_index_s']} s" if r["write_s"] is not None else "table and indices reused")
    print(f"\n== {r['rows']:,} rows x {DIM}-d: {built} ({', '.join(r['indices'])})")
    ex = r["exact"]
    print(f"{'search (* = mmfs default)':28} {'recall@10':>9} {'median ms':>10} {'p95 ms':>8} {'vs exact':>9}")
    for v in r["vector"]:
        label = f"IVF_PQ nprobes={v['nprobes']} refine={v['refine_factor']}" + (" *" if v["default"] else "")
        print(f"{label:28} {v['recall_at_10']:>9.3f} "
              f"{v['median_ms']:>10.2f} {v['p95_ms']:>8.2f} {ex['median_ms'] / v['median_ms']:>8.1f}x")
    print(f"{'exact scan (use_index=False)':28} {ex['recall_at_10']:>9.3f} {ex['median_ms']:>10.2f} {ex['p95_ms']:>8.2f} {'1.0x':>9}")
    c = r["caption"]
    print(f"caption top-10: FTS {c['fts_median_ms']} ms vs LIKE scan of every caption {c['like_scan_median_ms']} ms "
          f"({c['like_scan_median_ms'] / c['fts_median_ms']:.1f}x)")
    for name, lk in r["lookups"].items():
        print(f"lookup {name}: indexed {lk['indexed_median_ms']} ms vs scan {lk['scan_median_ms']} ms "
              f"({lk['scan_median_ms'] / lk['indexed_median_ms']:.1f}x, {lk['rows']} rows)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="100000,1000000")
    ap.add_argument("--dir", default="/work/benchdata/search")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--reuse", action="store_true", help="query the tables a previous run built")
    args = ap.parse_args()
    root = Path(args.dir)
    root.mkdir(parents=True, exist_ok=True)
    for rows in [int(x) for x in args.rows.split(",")]:
        r = run(rows, root, args.queries, args.reuse)
        report(r)
        print("json:", json.dumps(r))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
