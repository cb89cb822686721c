"""The metadata feature: width, height, fps, frames, codec... of each video of a drop."""

import dagster as dg

from mmfs_assets.assets.fill_config import FillConfig, fill_automation
from mmfs_assets.assets.group_summary import summarize_group
from mmfs_assets.assets.videos import run_properties, videos
from mmfs_assets.ingest.describe import METADATA_CODE_VERSION, describe_partition
from mmfs_assets.instance.liveness import tag_run_host
from mmfs_assets.partitions import drops_partitions
from mmfs_assets.progress import tracker
from mmfs_assets.resources import LanceTableResource, ProbeResource
from mmfs_loader import schema as S

G = S.METADATA


@dg.asset(
    partitions_def=drops_partitions,
    deps=[videos],
    group_name="features",
    code_version=METADATA_CODE_VERSION,
    kinds={"lance", "python"},
    automation_condition=fill_automation(),
    check_specs=[dg.AssetCheckSpec("metadata_complete", asset="video_metadata")],
    description=(
        "Fills the metadata column group (width, height, fps, duration_s, num_frames, codec, pix_fmt, "
        "bit_rate, rotation, has_audio, keyframe_interval, keyframe_times, is_vfr, corrupt_frames, lost_frames) for the "
        "drop's rows, decoding each video from the table in the fill engine's worker processes; broken or damaged files get a metadata_error "
        "(quarantine) instead of failing the run."
    ),
)
def video_metadata(
    context: dg.AssetExecutionContext, config: FillConfig, lance_table: LanceTableResource, probe: ProbeResource
) -> dg.MaterializeResult:
    key = context.partition_key
    tag_run_host(context.instance, context.run_id)  # liveness checks know where this run lives
    rep = describe_partition(
        lance_table.ref,
        key,
        properties=run_properties(context, "video_metadata", METADATA_CODE_VERSION),
        progress=tracker(context.log.info, f"metadata {key}"),
        max_corrupt_frames=probe.max_corrupt_frames,
        workers=probe.decode_workers or None,
        timeout=probe.decode_timeout_s,
        force=config.force,
    )
    summary = summarize_group(lance_table.open(), G, key, rep.producer)
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
            )
        ],
    )
