"""The feature assets: one partitioned asset per declared feature, all made by :func:`feature_asset`."""

import dagster as dg

from mmfs_assets.assets.fill_config import FillConfig, fill_automation, incomplete_failure
from mmfs_assets.assets.group_summary import summarize_group
from mmfs_assets.assets.video_metadata import video_metadata
from mmfs_assets.assets.videos import run_properties
from mmfs_assets.engine.decoders import DecoderUnavailableError
from mmfs_assets.engine.fill import fill_feature
from mmfs_assets.engine.report import FillIncomplete
from mmfs_assets.features.models import ModelUnavailableError, load_model, model_context
from mmfs_assets.features.spec import Feature
from mmfs_assets.instance.liveness import tag_run_host
from mmfs_assets.partitions import drops_partitions
from mmfs_assets.progress import tracker
from mmfs_assets.quality.partition_checks import group_quality
from mmfs_assets.resources import LanceTableResource, ModelsResource
from mmfs_assets.settings import Settings

GPU_POOL = "gpu"


def feature_asset(feature: Feature) -> dg.AssetsDefinition:
    """A partitioned asset that fills ``feature``'s column group for a drop (see :mod:`mmfs_assets.features.fill`)."""
    g = feature.group
    check = f"{feature.name}_complete"
    quality_check = f"{feature.name}_values"

    @dg.asset(
        name=feature.name,
        partitions_def=drops_partitions,
        deps=[video_metadata],
        group_name="features",
        code_version=feature.code_version,
        kinds={"lance", "pytorch"} if feature.uses_gpu else {"lance", "python"},
        pool=GPU_POOL if feature.uses_gpu else None,
        automation_condition=fill_automation(),
        check_specs=[
            dg.AssetCheckSpec(check, asset=feature.name, partitions_def=drops_partitions,
                              description="every row of the drop has a value or an error from the current producer"),
            dg.AssetCheckSpec(quality_check, asset=feature.name, partitions_def=drops_partitions,
                              description="errors at most MMFS_CHECK_MAX_ERROR_RATE of the drop's rows, no empty values "
                                          "without an error, embedding norms finite (and near 1 when normalised)"),
        ],
        description=feature.description,
        metadata={"columns": ", ".join(g.columns), "model_setting": feature.model_env},
    )
    def _fill(context: dg.AssetExecutionContext, config: FillConfig, lance_table: LanceTableResource,
              models: ModelsResource) -> dg.MaterializeResult:
        key = context.partition_key
        tag_run_host(context.instance, context.run_id)  # liveness checks know where this run lives
        try:
            ctx = model_context(feature, profile=models.model_profile, model_dir=models.model_dir, device=models.device,
                                env=models.feature_env)
            model = load_model(feature, ctx)
        except ModelUnavailableError as e:  # one message naming the setting, not the loader's traceback
            raise dg.Failure(description=str(e), allow_retries=False) from None
        context.log.info(f"{feature.name}: producer {model.producer} on {model.device}")
        if models.model_profile == "tiny" and feature.build_tiny is not None:
            context.log.warning(f"{feature.name}: MMFS_MODEL_PROFILE=tiny, random-init test models: the values "
                                "are meaningless (MMFS_MODEL_PROFILE=pretrained for real weights)")
        try:
            rep = fill_feature(
                lance_table.ref,
                key,
                feature,
                model,
                properties=run_properties(context, feature.name, feature.code_version),
                chunk_rows=models.fill_chunk_rows,
                decode_workers=models.decode_workers or None,
                decoder=models.decoder,
                decode_timeout=models.decode_timeout_s,
                progress=tracker(context.log.info, f"{feature.name} {key}"),
                log=context.log.info,
                force=config.force,
            )
        except DecoderUnavailableError as e:
            raise dg.Failure(description=str(e), allow_retries=False) from None
        except FillIncomplete as e:
            raise incomplete_failure(e) from None
        if rep.rows_kept_pretrained:
            context.log.warning(
                f"{feature.name}: {rep.rows_kept_pretrained} rows hold values of pretrained models; this run uses "
                "MMFS_MODEL_PROFILE=tiny and leaves them as they are (set MMFS_MODEL_PROFILE=pretrained, or "
                "force the run to overwrite them with test values)"
            )
        if rep.rows_with_repeated_frames and model.sampling == "keyframe":
            context.log.warning(
                f"{feature.name}: {rep.rows_with_repeated_frames} videos have fewer keyframes than the "
                f"{model.frames.count} frames asked for, so their frames repeat (keyframe sampling); "
                f"{feature.sampling_env}=exact samples the frames at the slice centres instead"
            )
        ds = lance_table.open()
        summary = summarize_group(ds, g, key, model.producer)
        s = Settings.from_env()
        q = group_quality(ds, g, key, max_error_rate=s.check_max_error_rate, norm_tolerance=s.check_norm_tolerance,
                          normalized=feature.normalized)
        return dg.MaterializeResult(
            metadata={
                "lance_version": rep.lance_version,
                "rows": summary.rows,
                "rows_computed": rep.rows_computed,
                "rows_already_current": rep.rows_already_current,
                "rows_forced": rep.rows_forced,
                "rows_kept_pretrained": rep.rows_kept_pretrained,
                "rows_waiting_for_metadata": rep.rows_waiting_for_metadata,
                "errors": len(summary.errored),
                "nulls_without_error": summary.nulls_without_error,
                "producer": model.producer,
                "model_profile": models.model_profile if feature.build_tiny is not None else "none",
                "device": model.device,
                **rep.metrics(),
                "commits": rep.commits,
                "commit_retries": rep.commit_retries,
                "quarantine": summary.quarantine,
            },
            data_version=dg.DataVersion(summary.data_version),
            check_results=[
                dg.AssetCheckResult(
                    check_name=check,
                    passed=summary.not_current == 0 and summary.nulls_without_error == 0,
                    severity=dg.AssetCheckSeverity.ERROR,
                    metadata={
                        "rows_not_current": summary.not_current,
                        "nulls_without_error": summary.nulls_without_error,
                        "rows_in_quarantine": len(summary.errored),
                    },
                ),
                dg.AssetCheckResult(check_name=quality_check, passed=q.passed, severity=dg.AssetCheckSeverity.WARN,
                                    description=q.description, metadata=q.metadata),
            ],
        )

    return _fill


def feature_assets(features: list[Feature]) -> list[dg.AssetsDefinition]:
    return [feature_asset(f) for f in features]
