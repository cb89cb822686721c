"""The drop sensor (new ready drop -> `drops` partition + ingest run) and the automation sensor."""

import json

import dagster as dg

from mmfs_assets.assets import videos
from mmfs_assets.ingest.drops import ScanState
from mmfs_assets.instance.liveness import free_dead_runs, wake_lost_claims
from mmfs_assets.partitions import DROPS, drops_partitions
from mmfs_assets.resources import DropFolderResource

SENSOR_INTERVAL_S = 15


def refused_summary(refused: dict[str, str], limit: int = 10) -> str:
    """The refused drops for a tick's skip reason: their names (the reasons are in the tick's log and `mmfs status`)."""
    names = sorted(refused)
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return (f"refused {len(names)} drop folder(s): {', '.join(repr(n) for n in names[:limit])}{more} "
            "(unsafe name, symlink or not a folder; `mmfs status` says why)")


@dg.sensor(
    name="drop_sensor",
    target=[videos],
    minimum_interval_seconds=SENSOR_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=("Registers each new ready drop (a folder under MMFS_DROP_DIR, or a prefix under an s3:// "
                 "MMFS_DROP_DIR) as a `drops` partition and requests its ingest run."),
)
def drop_sensor(context: dg.SensorEvaluationContext, drop_folder: DropFolderResource):
    source = drop_folder.source()
    registered = set(context.instance.get_dynamic_partitions(DROPS))
    # The cursor remembers refused names (each refusal is logged once, not every tick) and, for a bucket,
    # where the listing of drop names resumes (see mmfs_assets.ingest.object_drops). Idempotency comes
    # from the instance's registered partitions and the run keys, not from the cursor.
    old = json.loads(context.cursor) if context.cursor else {}
    scan, state = source.scan(registered, drop_folder.quiet_seconds, ScanState.of(old.get("scan")))
    refused = scan.refused
    logged = set(old.get("refused", []))
    for name, reason in refused.items():
        if name not in logged:
            context.log.warning(f"refused drop: {reason}")
    # an incremental listing does not see refused names below its cursor: keep them until a full one
    kept = logged if not scan.full else logged & set(refused)
    known_refused = sorted(set(refused) | kept)
    cursor = json.dumps({"refused": known_refused, "scan": state.record()})
    ready, waiting = scan.ready, scan.waiting
    if waiting:
        context.log.info(f"waiting for drops to be ready (_READY or {drop_folder.quiet_seconds:g}s quiet): {waiting}")
    if not ready:
        skip = f"no new ready drops in {source.root}"
        if waiting:
            skip += f"; {len(waiting)} still being written (no _READY, changed in the last {drop_folder.quiet_seconds:g}s)"
        if known_refused:
            skip += f"; {refused_summary(dict.fromkeys(known_refused, ''))}"
        return dg.SensorResult(skip_reason=skip, cursor=cursor)
    return dg.SensorResult(
        dynamic_partitions_requests=[drops_partitions.build_add_request(ready)],
        run_requests=[dg.RunRequest(partition_key=d, run_key=f"ingest:{d}") for d in ready],
        cursor=cursor,
    )


features_automation = dg.AutomationConditionSensorDefinition(
    "features_automation",
    target=dg.AssetSelection.groups("features", "store"),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=SENSOR_INTERVAL_S,
    description=("Materializes feature columns for new drops as soon as their ingest lands, and the search indices "
                 "after fills, and the per-drop statistics (eager automation)."),
)


REAPER_INTERVAL_S = 30


@dg.sensor(
    name="dead_run_reaper",
    minimum_interval_seconds=REAPER_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Marks runs failed whose process is gone (e.g. a killed `mmfs materialize`) and frees the pool "
        "slots they held, so the next ingest or GPU step does not wait forever."
    ),
)
def dead_run_reaper(context: dg.SensorEvaluationContext):
    freed = free_dead_runs(context.instance, log=context.log.warning)
    wake_lost_claims(context.instance)  # a slot freed between a claim's check and its enqueue wakes nobody
    return dg.SkipReason(f"freed the pool slots of dead runs {freed}" if freed else "no dead runs hold pool slots")
