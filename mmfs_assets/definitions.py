"""The Dagster code location: `dagster dev -w workspace.yaml` loads `defs` from here."""

from __future__ import annotations

import dagster as dg

from mmfs_assets.assets import ALL_ASSETS, FEATURES, dup_group, video_metadata, videos
from mmfs_assets.assets.current_checks import current_checks, staleness_sensor
from mmfs_assets.assets.drop_stats import drop_stats_asset
from mmfs_assets.assets.features import feature_assets
from mmfs_assets.assets.store_ops import maintenance_job, maintenance_schedule, search_indices_asset, snapshot_job
from mmfs_assets.engine.engines import choose_engine
from mmfs_assets.executors import build_executor
from mmfs_assets.features.spec import Feature
from mmfs_assets.resources import build_resources
from mmfs_assets.sensors import dead_run_reaper, drop_sensor, features_automation
from mmfs_assets.settings import Settings


def build_definitions(features: list[Feature] | None = None) -> dg.Definitions:
    """The code location; ``features`` replaces the catalog's features (e.g. in a custom location file)."""
    features = FEATURES if features is None else features
    settings = Settings.from_env()
    assets = ALL_ASSETS if features is FEATURES else [
        videos, video_metadata, *feature_assets(features), *([dup_group] if any(f.name == "clip_embedding" for f in features) else []),
        drop_stats_asset([f.name for f in features])]
    return dg.Definitions(
        assets=[*assets, search_indices_asset([f.name for f in features])],
        jobs=[snapshot_job, maintenance_job],
        schedules=[maintenance_schedule],
        asset_checks=current_checks(features),
        sensors=[drop_sensor, features_automation, dead_run_reaper, staleness_sensor(features)],
        resources=build_resources(),
        # with the ray engine a fill step only drives Ray (which places the GPUs): its pod asks for none
        executor=build_executor(settings.executor, [f.name for f in features if f.uses_gpu]
                                if choose_engine(settings) == "local" else []),
    )


defs = build_definitions()
