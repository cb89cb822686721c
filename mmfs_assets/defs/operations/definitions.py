"""The operations domain's definitions: what is derived from the filled table, and keeping the table healthy."""

import dagster as dg

from mmfs_assets.defs.operations.drop_stats import drop_stats_asset
from mmfs_assets.defs.operations.dup_group import SOURCE, dup_group_asset
from mmfs_assets.defs.operations.reaper import dead_run_reaper
from mmfs_assets.defs.operations.store_ops import (
    maintenance_job,
    maintenance_schedule,
    search_indices_asset,
    snapshot_job,
)
from mmfs_assets.features.spec import Feature
from mmfs_assets.settings import Settings


def build_operations_defs(features: list[Feature], settings: Settings) -> dg.Definitions:
    """``dup_group`` (when ``clip_embedding`` is among ``features``), ``drop_stats`` and ``search_indices``
    after the features, the snapshot and maintenance jobs, the maintenance schedule and the dead-run reaper."""
    names = [f.name for f in features]
    return dg.Definitions(
        assets=[*([dup_group_asset(settings)] if SOURCE in names else []), drop_stats_asset(names),
                search_indices_asset(names)],
        jobs=[snapshot_job, maintenance_job],
        schedules=[maintenance_schedule],
        sensors=[dead_run_reaper],
    )
