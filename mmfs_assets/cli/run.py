"""Materializing a drop in this process, with the code location's own Definitions and resources."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from mmfs_assets.assets import ALL_ASSETS
from mmfs_assets.ingest.drops import refusal
from mmfs_assets.partitions import drops_partitions
from mmfs_assets.resources import build_resources
from mmfs_assets.settings import Settings

ASSET_NAMES = [a.key.to_user_string() for a in ALL_ASSETS]
QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def dagster_instance() -> dg.DagsterInstance:
    """The instance the UI shows: $DAGSTER_HOME, else ./dagster_home when it exists, else ephemeral."""
    if not os.environ.get("DAGSTER_HOME"):
        local = Path.cwd() / "dagster_home"
        if (local / "dagster.yaml").is_file():
            os.environ["DAGSTER_HOME"] = str(local.resolve())
    if os.environ.get("DAGSTER_HOME"):
        return dg.DagsterInstance.get()
    return dg.DagsterInstance.ephemeral()


class MaterializeError(ValueError):
    """The request cannot run (unsafe key, missing drop folder, unknown asset)."""


def materialize_drop(
    key: str,
    select: list[str] | None,
    instance: dg.DagsterInstance,
    settings: Settings | None = None,
    quiet: bool = True,
) -> dg.ExecuteInProcessResult:
    """Register drop ``key`` as a partition if needed and materialize ``select`` (default: all) for it."""
    settings = settings or Settings.from_env()
    if reason := refusal(Path(settings.drop_dir), key):
        raise MaterializeError(reason)
    names = select or ASSET_NAMES
    unknown = sorted(set(names) - set(ASSET_NAMES))
    if unknown:
        raise MaterializeError(f"unknown asset(s) {unknown}; known: {ASSET_NAMES}")
    if not instance.has_dynamic_partition(drops_partitions.name, key):
        instance.add_dynamic_partitions(drops_partitions.name, [key])
    return dg.materialize(
        ALL_ASSETS,
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
