"""The feature assets: one partitioned asset per declared feature, all made by :func:`feature_asset`."""

import contextlib
import sys

import dagster as dg

from mmfs_assets.defs.features.fill_config import FillConfig, backfill_policy, fill_automation, incomplete_failure
from mmfs_assets.defs.features.fill_results import fill_result
from mmfs_assets.defs.ingest.partitions import drops_partitions
from mmfs_assets.defs.lineage import run_properties
from mmfs_assets.engine.decoders import DecoderUnavailableError
from mmfs_assets.engine.engines import choose_engine, fill_partitions
from mmfs_assets.engine.fill_options import FillOptions, ModelSettings
from mmfs_assets.engine.ray_cluster import RayUnavailableError
from mmfs_assets.engine.shard_reports import FleetFill
from mmfs_assets.features.models import ModelUnavailableError, load_model, model_context
from mmfs_assets.features.spec import Feature
from mmfs_assets.pools import GPU_POOL
from mmfs_assets.progress import tracker
from mmfs_assets.resources import ChecksResource, LanceTableResource, ModelsResource
from mmfs_assets.settings import Settings


def feature_asset(feature: Feature, settings: Settings | None = None) -> dg.AssetsDefinition:
    """A partitioned asset that fills ``feature``'s column group for a drop, or for a range of drops in a single-run
    backfill (:mod:`mmfs_assets.engine.engines`). With the ``ray`` engine Ray places the GPUs: the asset takes
    no slot of the ``gpu`` pool, which would serialise what Ray runs in parallel. The engine, backfill policy
    and automation come from ``settings`` (default: the environment)."""
    g = feature.group
    settings = settings or Settings.from_env()
    engine = choose_engine(settings)
    check = f"{feature.name}_complete"
    quality_check = f"{feature.name}_values"

    @dg.asset(
        name=feature.name,
        partitions_def=drops_partitions,
        deps=["video_metadata"],
        group_name="features",
        code_version=feature.code_version,
        kinds={"lance", "pytorch"} if feature.uses_gpu else {"lance", "python"},
        pool=GPU_POOL if feature.uses_gpu and engine == "local" else None,
        backfill_policy=backfill_policy(settings, engine),
        automation_condition=fill_automation(settings),
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
              models: ModelsResource, checks: ChecksResource) -> dg.MaterializeResult:
        keys = list(context.partition_keys)  # one drop, or a range of them in a single-run backfill
        msettings = ModelSettings(models.model_profile, models.model_dir, models.device, dict(models.feature_env))
        model = None
        try:
            with _device(feature, engine, models.device, f"run {context.run_id} ({feature.name} {_keys(keys)})",
                         lambda m: _say(context, m)):
                if engine == "local":  # the model loads here (fails fast); the ray engine loads one per replica
                    model = load_model(feature, model_context(feature, profile=models.model_profile,
                                                              model_dir=models.model_dir, device=models.device,
                                                              env=models.feature_env))
                    context.log.info(f"{feature.name}: producer {model.producer} on {model.device}")
                if models.model_profile == "tiny" and feature.build_tiny is not None:
                    context.log.warning(f"{feature.name}: MMFS_MODEL_PROFILE=tiny, random-init test models: the "
                                        "values are meaningless (MMFS_MODEL_PROFILE=pretrained for real weights)")
                fill = fill_partitions(
                    lance_table.ref, feature, keys, engine=engine, models=msettings, settings=settings, model=model,
                    options=FillOptions(
                        run_properties(context, feature.name, feature.code_version, partition=False),
                        chunk_rows=models.fill_chunk_rows, decode_workers=models.decode_workers or None,
                        decoder=models.decoder, decode_timeout=models.decode_timeout_s, force=config.force,
                    ),
                    log=context.log.info, progress=lambda key: tracker(context.log.info, f"{feature.name} {key}"),
                )
        except (ModelUnavailableError, DecoderUnavailableError, RayUnavailableError) as e:
            # one message naming the setting, not the loader's traceback
            raise dg.Failure(description=str(e), allow_retries=False) from None
        if fill.problems:
            raise incomplete_failure(fill) from None
        _warn(context, feature, fill)
        result, observations = fill_result(feature, lance_table.open(), fill, keys, model_profile=models.model_profile,
                                           check=check, quality_check=quality_check, thresholds=checks)
        for obs in observations:
            context.log_event(obs)
        return result

    return _fill


def _warn(context: dg.AssetExecutionContext, feature: Feature, fill: FleetFill) -> None:
    kept = sum(r.rows_kept_pretrained for r in fill.reports.values())
    repeated = sum(r.rows_with_repeated_frames for r in fill.reports.values())
    if kept:
        context.log.warning(
            f"{feature.name}: {kept} rows hold values of pretrained models; this run uses "
            "MMFS_MODEL_PROFILE=tiny and leaves them as they are (set MMFS_MODEL_PROFILE=pretrained, or "
            "force the run to overwrite them with test values)"
        )
    if repeated:
        why = (f"fewer keyframes than frames asked for (keyframe sampling; {feature.sampling_env}=auto samples those "
               "videos at the slice centres)" if "|sampling=keyframe" in fill.producer
               else "fewer frames than the frames asked for")
        context.log.warning(f"{feature.name}: {repeated} videos have {why}, so their frames repeat")


def _say(context: dg.AssetExecutionContext, message: str) -> None:
    """A warning in the run's log, and on stderr: a CLI run shows its step's waits as they happen."""
    context.log.warning(message)
    print(message, file=sys.stderr, flush=True)


def _keys(keys: list[str]) -> str:
    return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")


def _device(feature: Feature, engine: str, device: str, holder: str, log):
    """The node-local lock of the device the model will use (:mod:`mmfs_assets.engine.device_lock`): local
    fills of GPU features only (Ray places its replicas itself; a CPU-only feature needs no device)."""
    if engine != "local" or not feature.uses_gpu:
        return contextlib.nullcontext()
    from mmfs_assets.engine.device_lock import device_lock
    from mmfs_assets.features.models import resolve_device

    return device_lock(resolve_device(device), holder, log)


def feature_assets(features: list[Feature], settings: Settings | None = None) -> list[dg.AssetsDefinition]:
    return [feature_asset(f, settings) for f in features]
