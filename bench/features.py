"""Feature fills: bytes written against the alternatives (throughput: ``bench/gpu.py``).

1. Write amplification. A table of ``--rows`` videos of ``--mb`` MB (real 720p H.264 padded with random
   bytes, stored inline) gets a CLIP embedding column group (512-d vector, timestamps, producer,
   error). Bytes of new/changed files are counted for: the engine's column-only ``DataReplacement``
   fill; Lance ``merge_insert`` (when matched, update) of the same columns; Lance ``update`` of ONE
   string column (a lower bound of what update writes). Each runs on its own copy of the same table.

Usage: python bench/features.py [--rows 96] [--mb 8]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LANCE_LOG", "error")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import lance  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

from bench.ingest_metadata import make_drop  # noqa: E402
from bench.measured import expect_count  # noqa: E402
from mmfs_assets.features.catalog.clip_embedding import FEATURE as CLIP  # noqa: E402
from mmfs_assets.ingest.ingest_drop import ingest_drop  # noqa: E402
from mmfs_assets.table import ensure_group_columns, replace_columns  # noqa: E402
from mmfs_loader.contract import schema as S  # noqa: E402
from mmfs_loader.contract.sql import equals  # noqa: E402


def files(p: Path) -> dict[str, tuple[int, int]]:
    return {str(f.relative_to(p)): (f.stat().st_size, f.stat().st_mtime_ns) for f in p.rglob("*") if f.is_file()}


def written(before: dict, after: dict) -> int:
    """Bytes of files created or changed (what the operation wrote)."""
    return sum(s for k, (s, m) in after.items() if before.get(k) != (s, m))


def clip_values(ds: lance.LanceDataset, rng: np.random.Generator) -> pa.Table:
    g = CLIP.group
    t = ds.to_table(columns=[S.ID], with_row_id=True)
    n = len(t)
    v = rng.standard_normal((n, 512)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return pa.table({
        "_rowid": t["_rowid"],
        S.ID: t[S.ID],
        g.value_columns[0]: pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1)), 512),
        g.value_columns[1]: pa.array([[0.5 + i for i in range(8)]] * n, pa.list_(pa.float64())),
        g.producer_column: pa.array(["clip_embedding:clip-v1|model=ViT-B-32|weights=bench|frames=8x224|dtype=fp32"] * n),
        g.error_column: pa.array([None] * n, pa.string()),
    })


def bench_write_amplification(root: Path, rows: int, mb: int) -> dict:
    drop = make_drop(root / "wa", rows, mb)
    base = root / "base.lance"
    ingest_drop(drop, "bench", str(base), properties={})
    ensure_group_columns(str(base), CLIP.group)
    shutil.rmtree(drop)
    blob_bytes = sum(s for k, (s, _) in files(base).items() if k.startswith("data/"))
    values = clip_values(lance.dataset(str(base)), np.random.default_rng(0))
    new_cols = values.drop_columns(["_rowid", S.ID])
    col_bytes = new_cols.nbytes
    out = {"rows": rows, "table_bytes": blob_bytes, "new_column_bytes": col_bytes}

    def run(name, fn):
        """``fn`` writes the columns of every row and returns how many rows it wrote."""
        t = root / f"{name}.lance"
        shutil.copytree(base, t)
        before = files(t)
        t0 = time.perf_counter()
        n = fn(str(t))
        dt = time.perf_counter() - t0
        expect_count(f"rows {name} wrote", n, rows)
        w = written(before, files(t))
        out[name] = {"bytes": w, "x_columns": w / col_bytes, "seconds": dt}
        shutil.rmtree(t)

    run("data_replacement", lambda uri: replace_columns(uri, values.drop_columns([S.ID]), locate_filter=equals(S.DROP_ID, "bench"),
                                                       properties={}).rows)
    run("merge_insert", lambda uri: lance.dataset(uri).merge_insert(S.ID).when_matched_update_all().execute(
        values.drop_columns(["_rowid"]))["num_updated_rows"])
    run("update_one_column", lambda uri: lance.dataset(uri).update({CLIP.group.producer_column: "'bench'"},
                                                                   where=equals(S.DROP_ID, "bench"))["num_rows_updated"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=96)
    ap.add_argument("--mb", type=int, default=8)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=os.environ.get("MMFS_BENCH_DIR")) as tmp:
        root = Path(tmp)
        wa = bench_write_amplification(root, args.rows, args.mb)
        print(f"\n== write amplification: {wa['rows']} rows, {wa['table_bytes'] / 1e6:.1f} MB of video blobs, "
              f"new columns {wa['new_column_bytes']:,} B (Arrow)")
        for k in ("data_replacement", "merge_insert", "update_one_column"):
            r = wa[k]
            print(f"{k:20s} {r['bytes']:>14,} B  {r['x_columns']:8.2f}x the new columns  {r['seconds']:6.2f} s")
        dr = wa["data_replacement"]["bytes"]
        print(f"merge_insert writes {wa['merge_insert']['bytes'] / dr:.0f}x, update {wa['update_one_column']['bytes'] / dr:.0f}x "
              "the bytes of the column-only fill")
    print(f"\npeak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
