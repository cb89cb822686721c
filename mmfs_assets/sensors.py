"""The drop sensor (new ready drop -> `drops` partition + ingest run) and the automation sensor."""

import json
from collections.abc import Iterator
from pathlib import Path

import dagster as dg

from mmfs_assets.assets import videos
from mmfs_assets.ingest.drops import is_ready, refusal
from mmfs_assets.instance.liveness import free_dead_runs, wake_lost_claims
from mmfs_assets.partitions import DROPS, drops_partitions
from mmfs_assets.resources import DropFolderResource

SENSOR_INTERVAL_S = 15


def drop_folders(root: Path, registered: set[str]) -> Iterator[tuple[Path, str | None]]:
    """(folder, why it is refused or None) for every unregistered candidate drop under ``root``."""
    if not root.is_dir():
        return
    for d in sorted(root.iterdir(), key=lambda p: p.name):
        name = d.name
        if name.startswith((".", "_")) or name in registered:
            continue
        if not d.is_dir() and not d.is_symlink():
            continue  # a stray file next to the drops
        yield d, refusal(root, name)


def scan_drops(root: Path, registered: set[str], quiet_seconds: float) -> tuple[list[str], list[str], dict[str, str]]:
    """(ready new drops, drops still being written, refused drops with reasons) under ``root``."""
    ready: list[str] = []
    waiting: list[str] = []
    refused: dict[str, str] = {}
    for d, reason in drop_folders(root, registered):
        if reason:
            refused[d.name] = reason
        else:
            (ready if is_ready(d, quiet_seconds) else waiting).append(d.name)
    return ready, waiting, refused


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
    description="Registers each new ready drop folder as a `drops` partition and requests its ingest run.",
)
def drop_sensor(context: dg.SensorEvaluationContext, drop_folder: DropFolderResource):
    root = Path(drop_folder.root)
    registered = set(context.instance.get_dynamic_partitions(DROPS))
    ready, waiting, refused = scan_drops(root, registered, drop_folder.quiet_seconds)
    # The cursor only remembers refused names, so each refusal is logged once, not every tick.
    # Idempotency comes from the instance's registered partitions and the run keys.
    logged = set(json.loads(context.cursor)["refused"]) if context.cursor else set()
    for name, reason in refused.items():
        if name not in logged:
            context.log.warning(f"refused drop: {reason}")
    cursor = json.dumps({"refused": sorted(set(refused) | (logged & set(refused)))})
    if waiting:
        context.log.info(f"waiting for drops to be ready (_READY or {drop_folder.quiet_seconds:g}s quiet): {waiting}")
    if not ready:
        skip = f"no new ready drops in {root}"
        if waiting:
            skip += f"; {len(waiting)} still being written (no _READY, changed in the last {drop_folder.quiet_seconds:g}s)"
        if refused:
            skip += f"; {refused_summary(refused)}"
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
