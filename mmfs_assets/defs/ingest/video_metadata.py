"""The metadata feature: width, height, fps, frames, codec... of each video of a drop."""

import dagster as dg

from mmfs_assets.defs.features.fill_config import FillConfig, fill_automation, incomplete_failure
from mmfs_assets.defs.features.group_summary import summarize_group
from mmfs_assets.defs.ingest.partitions import drops_partitions
from mmfs_assets.defs.ingest.videos import videos
from mmfs_assets.defs.lineage import run_properties
from mmfs_assets.engine.report import FillIncomplete
from mmfs_assets.ingest.describe import METADATA_CODE_VERSION, describe_partition
from mmfs_assets.ingest.probe import FrameLimits
from mmfs_assets.progress import tracker
from mmfs_assets.quality.partition_checks import group_quality
from mmfs_assets.resources import ChecksResource, LanceTableResource, ProbeResource
from mmfs_assets.settings import Settings
from mmfs_loader.contract import schema as S

G = S.METADATA


def video_metadata_asset(settings: Settings) -> dg.AssetsDefinition:
    """The ``video_metadata`` asset, its automation from ``settings`` (:func:`fill_automation`)."""

    @dg.asset(
        partitions_def=drops_partitions,
        deps=[videos],
        group_name="features",
        code_version=METADATA_CODE_VERSION,
        kinds={"lance", "python"},
        automation_condition=fill_automation(settings),
        check_specs=[
            dg.AssetCheckSpec("metadata_complete", asset="video_metadata", partitions_def=drops_partitions),
            dg.AssetCheckSpec("metadata_decode_failures", asset="video_metadata", partitions_def=drops_partitions,
                              description="videos that cannot be decoded (quarantined) are at most MMFS_CHECK_MAX_ERROR_RATE "
                                          "of the drop"),
        ],
        description=(
            "Fills the metadata column group (width, height, fps, duration_s, num_frames, codec, pix_fmt, "
            "bit_rate, rotation, has_audio, keyframe_interval, keyframe_times, is_vfr, corrupt_frames, lost_frames) for the "
            "drop's rows, decoding each video from the table in the fill engine's worker processes; broken or damaged files get a metadata_error "
            "(quarantine) instead of failing the run."
        ),
    )
    def video_metadata(
        context: dg.AssetExecutionContext, config: FillConfig, lance_table: LanceTableResource, probe: ProbeResource,
        checks: ChecksResource,
    ) -> dg.MaterializeResult:
        key = context.partition_key
        try:
            rep = describe_partition(
                lance_table.ref,
                key,
                properties=run_properties(context, "video_metadata", METADATA_CODE_VERSION),
                progress=tracker(context.log.info, f"metadata {key}"),
                max_corrupt_frames=probe.max_corrupt_frames,
                limits=FrameLimits.of(probe),
                workers=probe.decode_workers or None,
                timeout=probe.decode_timeout_s,
                force=config.force,
            )
        except FillIncomplete as e:
            raise incomplete_failure(e) from None
        ds = lance_table.open()
        summary = summarize_group(ds, G, key, rep.producer)
        q = group_quality(ds, G, key, max_error_rate=checks.check_max_error_rate,
                          norm_tolerance=checks.check_norm_tolerance)
        return dg.MaterializeResult(
            metadata={
                "lance_version": rep.lance_version,
                "rows": summary.rows,
                "rows_described": rep.rows_written,
                "rows_already_current": rep.rows_already_current,
                "rows_forced": rep.rows_forced,
                "errors": len(summary.errored),
                "producer": rep.producer,
                "commits": rep.commits,
                "commit_retries": rep.commit_retries,
                **rep.metrics(),
                "quarantine": summary.quarantine,
            },
            data_version=dg.DataVersion(summary.data_version),
            check_results=[
                dg.AssetCheckResult(
                    check_name="metadata_complete",
                    passed=summary.not_current == 0,
                    severity=dg.AssetCheckSeverity.ERROR,
                    metadata={"rows_without_metadata": summary.not_current, "rows_in_quarantine": len(summary.errored)},
                ),
                dg.AssetCheckResult(
                    check_name="metadata_decode_failures", passed=q.passed, severity=dg.AssetCheckSeverity.WARN,
                    description=q.description.replace("have errors", "cannot be decoded"),
                    metadata={"decode_failures": q.metadata["errors"], "decode_failure_rate": q.metadata["error_rate"],
                              "rows": q.metadata["rows"], "max_error_rate": q.metadata["max_error_rate"]},
                ),
            ],
        )

    return video_metadata
