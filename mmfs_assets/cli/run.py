"""Materializing a drop in this process, with the code location's own Definitions and resources."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import dagster as dg

from mmfs_assets.assets import ALL_ASSETS
from mmfs_assets.ingest.drops import refusal
from mmfs_assets.instance.guard import guarded_materialize
from mmfs_assets.instance.home import open_instance
from mmfs_assets.partitions import drops_partitions
from mmfs_assets.resources import build_resources
from mmfs_assets.settings import Settings

ASSET_NAMES = [a.key.to_user_string() for a in ALL_ASSETS]
log = logging.getLogger("mmfs")
QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def dagster_instance(ephemeral: bool = False) -> dg.DagsterInstance:
    """The instance the UI shows ($DAGSTER_HOME, required and initialised under a lock), or an ephemeral one."""
    return open_instance(ephemeral)


class MaterializeError(ValueError):
    """The request cannot run (unsafe key, missing drop folder, unknown asset)."""


def materialize_drop(
    key: str,
    select: list[str] | None,
    instance: dg.DagsterInstance,
    settings: Settings | None = None,
    quiet: bool = True,
    notify: Callable[[str], None] | None = None,
) -> dg.ExecuteInProcessResult:
    """Register drop ``key`` as a partition if needed and materialize ``select`` (default: all) for it.

    Slots held by dead runs are freed first; while a pool is busy ``notify`` hears what the run waits for,
    and Ctrl-C stops it (see :mod:`mmfs_assets.instance.guard`).
    """
    settings = settings or Settings.from_env()
    if reason := refusal(Path(settings.drop_dir), key):
        raise MaterializeError(reason)
    names = select or ASSET_NAMES
    unknown = sorted(set(names) - set(ASSET_NAMES))
    if unknown:
        raise MaterializeError(f"unknown asset(s) {unknown}; known: {ASSET_NAMES}")
    if not instance.has_dynamic_partition(drops_partitions.name, key):
        instance.add_dynamic_partitions(drops_partitions.name, [key])
    pools = sorted({a.op.pool for a in ALL_ASSETS if a.key.to_user_string() in names and a.op.pool})
    return guarded_materialize(
        ALL_ASSETS,
        pools=pools,
        notify=notify or (lambda msg: log.warning(msg)),
        selection=names,
        partition_key=key,
        instance=instance,
        resources=build_resources(settings),
        run_config=QUIET_LOGS if quiet else None,
        raise_on_error=False,
        tags={"mmfs/launched_by": "cli"},
    )


def result_summary(result: dg.ExecuteInProcessResult) -> list[tuple[str, dict]]:
    """(asset, metadata as plain values) for every materialization of the run."""
    out = []
    for ev in result.get_asset_materialization_events():
        mat = ev.step_materialization_data.materialization
        out.append((mat.asset_key.to_user_string(), {k: v.value for k, v in mat.metadata.items()}))
    return out
