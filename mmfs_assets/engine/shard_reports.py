"""One report per partition from the reports of its shards (a sharded fill still records one materialization
per partition, with the same fields as a local fill plus ``engine``, ``shards``, ``replicas``, ``shard_retries``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields

from mmfs_assets.engine.report import FillReport

# summed over shards; everything else is merged by its own rule below
_SUMMED = {
    f.name for f in fields(FillReport)
    if f.type in ("int", "float") and f.name not in ("decode_workers", "shards", "replicas", "seconds_total")
}


def merge_reports(feature: str, drop_id: str, producer: str, parts: Sequence[FillReport], *, engine: str,
                  replicas: int, seconds_total: float, shard_retries: int = 0, shards: int | None = None) -> FillReport:
    """The partition's report: counts and seconds summed over its shards, the latest Lance version, the
    wall time of the partition's fill (first shard started to last committed) as ``seconds_total``."""
    out = FillReport(feature, drop_id, producer)
    for rep in parts:
        for name in _SUMMED:
            setattr(out, name, getattr(out, name) + getattr(rep, name))
        out.amplification_per_row += rep.amplification_per_row
        out.commit_versions += rep.commit_versions
        out.deferred_reasons += [r for r in rep.deferred_reasons if r not in out.deferred_reasons]
        if rep.lance_version is not None:
            out.lance_version = max(out.lance_version or 0, rep.lance_version)
        if rep.undone_by_rollback_version is not None:
            out.undone_by_rollback_version = rep.undone_by_rollback_version
        out.decoder = out.decoder or rep.decoder
        out.decoder_reason = out.decoder_reason or rep.decoder_reason
        out.sampling = out.sampling or rep.sampling
        out.decode_workers = max(out.decode_workers, rep.decode_workers)
    busy = [r.gpu_busy_percent for r in parts if r.gpu_busy_percent is not None]
    out.gpu_busy_percent = round(sum(busy) / len(busy), 1) if busy else None
    # every shard plans the partition's rows of its own fragments: the partition's row count is their sum
    out.engine, out.replicas, out.shard_retries = engine, replicas, shard_retries
    out.shards = len(parts) if shards is None else shards
    out.decode_workers *= max(1, min(replicas, out.shards))  # per replica -> the fill's
    out.seconds_total = seconds_total
    return out


@dataclass
class FleetFill:
    """What a sharded fill did: one report per partition, and why a partition is incomplete (if it is)."""

    reports: dict[str, FillReport]
    problems: dict[str, str] = field(default_factory=dict)
    producer: str = ""
    device: str = ""
    replicas: int = 0
