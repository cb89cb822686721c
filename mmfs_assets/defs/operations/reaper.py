"""The ``dead_run_reaper`` sensor: runs whose process is gone are marked failed, freeing their pools."""

import dagster as dg

from mmfs_assets.instance.liveness import free_dead_runs

REAPER_INTERVAL_S = 30


@dg.sensor(
    name="dead_run_reaper",
    minimum_interval_seconds=REAPER_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Marks runs failed whose process is gone (e.g. a killed `mmfs materialize`), so the run queue and "
        "the next CLI run stop counting the pools they used."
    ),
)
def dead_run_reaper(context: dg.SensorEvaluationContext):
    freed = free_dead_runs(context.instance, log=context.log.warning)
    return dg.SkipReason(f"marked dead runs failed: {freed}" if freed else "no dead runs")
