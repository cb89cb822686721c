"""A feature fill's materialization: one report per partition, whichever engine ran it and however many
partitions the run covered.

A run of one partition records that partition's report as the materialization metadata. A single-run
backfill covers a range of partitions, and Dagster records ONE materialization per partition from the one
result the step returns (same metadata on each); so the metadata holds the run's totals plus
``partition_reports`` (every partition's own report, by partition key), and the step also logs an
``AssetObservation`` per partition with its own numbers, shown on that partition's page.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import dagster as dg
import lance

from mmfs_assets.defs.features.group_summary import GroupSummary, summarize_group
from mmfs_assets.engine.report import FillReport
from mmfs_assets.engine.shard_reports import FleetFill
from mmfs_assets.features.spec import Feature
from mmfs_assets.quality.partition_checks import QualityOutcome, group_quality
from mmfs_assets.resources import ChecksResource


def _partition_metadata(rep: FillReport, summary: GroupSummary) -> dict[str, Any]:
    return {
        "lance_version": rep.lance_version,
        "rows": summary.rows,
        "rows_computed": rep.rows_computed,
        "rows_already_current": rep.rows_already_current,
        "rows_forced": rep.rows_forced,
        "rows_kept_pretrained": rep.rows_kept_pretrained,
        "rows_waiting_for_metadata": rep.rows_waiting_for_metadata,
        "errors": len(summary.errored),
        "nulls_without_error": summary.nulls_without_error,
        **rep.metrics(),
        "quarantined_by_metadata": summary.quarantined_by_metadata,
        # the partition's rows whose frames repeat, whichever run filled them (the run's own count is in the log)
        "rows_with_repeated_frames": summary.rows_with_repeated_frames,
        "commits": rep.commits,
        "commit_retries": rep.commit_retries,
    }


def fill_result(feature: Feature, ds: lance.LanceDataset, fill: FleetFill, keys: Sequence[str], *, model_profile: str,
                check: str, quality_check: str,
                thresholds: ChecksResource) -> tuple[dg.MaterializeResult, list[dg.AssetObservation]]:
    """The step's result for ``keys`` and, when it covers several partitions, one observation per partition
    (the ``quality_check`` with the ``thresholds`` of the ``checks`` resource)."""
    per: dict[str, tuple[dict[str, Any], GroupSummary, QualityOutcome]] = {}
    for key in keys:
        summary = summarize_group(ds, feature.group, key, fill.producer)
        q = group_quality(ds, feature.group, key, max_error_rate=thresholds.check_max_error_rate,
                          norm_tolerance=thresholds.check_norm_tolerance, normalized=feature.normalized)
        per[key] = (_partition_metadata(fill.reports[key], summary), summary, q)
    common = {
        "producer": fill.producer,
        "model_profile": model_profile if feature.build_tiny is not None else "none",
        "device": fill.device,
    }
    summaries = [summary for _, summary, _ in per.values()]
    not_current = sum(x.not_current for x in summaries)
    nulls = sum(x.nulls_without_error for x in summaries)
    complete = dg.AssetCheckResult(
        check_name=check, passed=not_current == 0 and nulls == 0, severity=dg.AssetCheckSeverity.ERROR,
        metadata={"rows_not_current": not_current, "nulls_without_error": nulls,
                  "rows_in_quarantine": sum(len(x.errored) for x in summaries),
                  "rows_quarantined_by_metadata": sum(x.quarantined_by_metadata for x in summaries)},
    )
    if len(keys) == 1:
        meta, summary, q = per[keys[0]]
        quality = dg.AssetCheckResult(check_name=quality_check, passed=q.passed, severity=dg.AssetCheckSeverity.WARN,
                                      description=q.description, metadata=q.metadata)
        result: dg.MaterializeResult = dg.MaterializeResult(metadata={**meta, **common, "quarantine": summary.quarantine},
                                      data_version=dg.DataVersion(summary.data_version),
                                      check_results=[complete, quality])
        return result, []
    failing = [k for k, (_, _, q) in per.items() if not q.passed]
    quality = dg.AssetCheckResult(
        check_name=quality_check, passed=not failing, severity=dg.AssetCheckSeverity.WARN,
        description="; ".join(f"{k}: {per[k][2].description}" for k in failing[:5]) or "every partition passed",
        metadata={"partitions_failing": ", ".join(failing) or "none", "partitions_checked": len(keys)},
    )
    reports = {k: meta for k, (meta, _, _) in per.items()}
    totals = {name: sum(int(m.get(name) or 0) for m in reports.values())
              for name in ("rows", "rows_computed", "rows_already_current", "errors", "quarantined_by_metadata",
                           "rows_with_repeated_frames", "nulls_without_error", "commits", "shard_retries", "shards")}
    first = fill.reports[keys[0]]
    digest = hashlib.sha256("|".join(f"{k}:{per[k][1].data_version}" for k in keys).encode()).hexdigest()[:16]
    result = dg.MaterializeResult(
        metadata={
            **totals, **common,
            "partitions_in_run": len(keys),
            "engine": first.engine,
            "replicas": first.replicas,
            "lance_version": max((r.lance_version or 0) for r in fill.reports.values()),
            "partition_reports": dg.MetadataValue.json(reports),
            "quarantine": dg.MetadataValue.md("\n".join(f"- `{k}` `{f}`: {e}" for k, (_, x, _) in per.items()
                                                        for f, e in x.errored[:20]) or "none"),
        },
        data_version=dg.DataVersion(digest),
        check_results=[complete, quality],
    )
    observations = [dg.AssetObservation(asset_key=feature.name, partition=k, metadata={**meta, **common})
                    for k, (meta, _, _) in per.items()]
    return result, observations
