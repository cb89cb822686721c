"""What every run of the code location records with its data: commit properties (the table's history is a
lineage log) and data versions (a digest of what a partition holds, so an unchanged re-run keeps its version).
Shared by the domains (:mod:`mmfs_assets.defs.ingest`, :mod:`~mmfs_assets.defs.features`,
:mod:`~mmfs_assets.defs.operations`)."""

from __future__ import annotations

import hashlib

import dagster as dg
import pyarrow as pa


def table_digest(t: pa.Table, sort_by: str) -> str:
    """Order-independent digest of a small table (sorted by ``sort_by``)."""
    h = hashlib.sha256()
    if len(t):
        t = t.sort_by(sort_by)
    for name in t.column_names:
        h.update(name.encode())
        for v in t[name].to_pylist():
            h.update(repr(v).encode())
            h.update(b"\x1f")
    return h.hexdigest()[:16]


def run_properties(context: dg.AssetExecutionContext, asset: str, code_version: str,
                   partition: bool = True) -> dict[str, str]:
    """Transaction properties every commit of a run carries: the table's history is a lineage log.
    ``partition=False``: the engine adds ``mmfs.partition`` per partition (a run may cover several)."""
    props = {"mmfs.asset": asset, "mmfs.run_id": context.run_id, "mmfs.code_version": code_version}
    if partition:
        props["mmfs.partition"] = context.partition_key
    return props
