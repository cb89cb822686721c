"""The feature assets: one partitioned asset per declared feature, all made by :func:`feature_asset`."""

import dagster as dg

from mmfs_assets.assets.digest import table_digest
from mmfs_assets.assets.video_metadata import video_metadata
from mmfs_assets.assets.videos import run_properties
from mmfs_assets.features.fill import fill_feature
from mmfs_assets.features.models import ModelUnavailableError, load_model, model_context
from mmfs_assets.features.spec import Feature
from mmfs_assets.partitions import drops_partitions
from mmfs_assets.progress import tracker
from mmfs_assets.resources import LanceTableResource, ModelsResource
from mmfs_loader import schema as S
from mmfs_loader.sql import equals

GPU_POOL = "gpu"


def _nulls(ds, feature: Feature, key: str) -> int:
    """Rows of the partition whose values are null without an error saying why (should be 0)."""
    g = feature.group
    first = g.value_columns[0]
    t = ds.to_table(columns=[first, g.error_column], filter=equals(S.DROP_ID, key))
    return sum(1 for v, e in zip(t[first].is_null().to_pylist(), t[g.error_column].to_pylist()) if v and e is None)


def feature_asset(feature: Feature) -> dg.AssetsDefinition:
    """A partitioned asset that fills ``feature``'s column group for a drop (see :mod:`mmfs_assets.features.fill`)."""
    g = feature.group
    check = f"{feature.name}_complete"

    @dg.asset(
        name=feature.name,
        partitions_def=drops_partitions,
        deps=[video_metadata],
        group_name="features",
        code_version=feature.code_version,
        kinds={"lance", "pytorch"} if feature.uses_gpu else {"lance", "python"},
        pool=GPU_POOL if feature.uses_gpu else None,
        automation_condition=dg.AutomationCondition.eager(),
        check_specs=[dg.AssetCheckSpec(check, asset=feature.name, description="every row of the drop has a value or an error from the current producer")],
        description=feature.description,
        metadata={"columns": ", ".join(g.columns), "model_setting": feature.model_env},
    )
    def _fill(context: dg.AssetExecutionContext, lance_table: LanceTableResource, models: ModelsResource) -> dg.MaterializeResult:
        key = context.partition_key
        try:
            ctx = model_context(feature, profile=models.profile, model_dir=models.model_dir, device=models.device, env=models.env)
            model = load_model(feature, ctx)
        except ModelUnavailableError as e:
            raise dg.Failure(description=str(e)) from e
        context.log.info(f"{feature.name}: producer {model.producer} on {model.device}")
        rep = fill_feature(
            lance_table.uri,
            key,
            feature,
            model,
            properties=run_properties(context, feature.name, feature.code_version),
            storage_options=lance_table.options,
            chunk_rows=models.chunk_rows,
            decode_workers=models.decode_workers or None,
            progress=tracker(context.log.info, f"{feature.name} {key}"),
        )
        ds = lance_table.open()
        rows = ds.to_table(columns=[S.ID, S.FILE_NAME, g.producer_column, g.error_column], filter=equals(S.DROP_ID, key))
        not_current = sum(1 for p in rows[g.producer_column].to_pylist() if p != model.producer)
        errored = [(f, e) for f, e in zip(rows[S.FILE_NAME].to_pylist(), rows[g.error_column].to_pylist()) if e]
        return dg.MaterializeResult(
            metadata={
                "lance_version": rep.lance_version,
                "rows": len(rows),
                "rows_computed": rep.rows_computed,
                "rows_already_current": rep.rows_already_current,
                "rows_waiting_for_metadata": rep.rows_waiting_for_metadata,
                "errors": len(errored),
                "nulls_without_error": _nulls(ds, feature, key),
                "producer": model.producer,
                "device": model.device,
                "rows_per_s": round(rep.rows_per_s, 3),
                "seconds_decode": round(rep.seconds_decode, 3),
                "seconds_decode_wait": round(rep.seconds_decode_wait, 3),
                "seconds_compute": round(rep.seconds_compute, 3),
                "seconds_write": round(rep.seconds_write, 3),
                "commits": rep.commits,
                "commit_retries": rep.commit_retries,
                "quarantine": dg.MetadataValue.md("\n".join(f"- `{f}`: {e}" for f, e in errored[:50]) or "none"),
            },
            data_version=dg.DataVersion(table_digest(rows.select([S.ID, g.producer_column, g.error_column]), S.ID)),
            check_results=[
                dg.AssetCheckResult(
                    check_name=check,
                    passed=not_current == 0,
                    severity=dg.AssetCheckSeverity.ERROR,
                    metadata={"rows_not_current": not_current, "rows_in_quarantine": len(errored)},
                )
            ],
        )

    return _fill


def feature_assets(features: list[Feature]) -> list[dg.AssetsDefinition]:
    return [feature_asset(f) for f in features]
