"""The Dagster code location: `dagster dev -w workspace.yaml` loads `defs` from here."""

from __future__ import annotations

import dagster as dg

from mmfs_assets.assets import ALL_ASSETS
from mmfs_assets.resources import build_resources
from mmfs_assets.sensors import drop_sensor, features_automation


def build_definitions() -> dg.Definitions:
    return dg.Definitions(
        assets=ALL_ASSETS,
        sensors=[drop_sensor, features_automation],
        resources=build_resources(),
        executor=dg.multiprocess_executor,
    )


defs = build_definitions()
