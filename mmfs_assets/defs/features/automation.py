"""The automation sensor: the declarative automation conditions of the fills and of what follows them."""

import dagster as dg

AUTOMATION_INTERVAL_S = 15

features_automation = dg.AutomationConditionSensorDefinition(
    "features_automation",
    target=dg.AssetSelection.groups("features", "store"),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=AUTOMATION_INTERVAL_S,
    description=("Materializes feature columns for new drops as soon as their ingest lands, and the search indices "
                 "after fills, and the per-drop statistics (eager automation)."),
)
