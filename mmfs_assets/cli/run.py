"""Materializing a drop in this process, with the code location's own Definitions and resources."""

from __future__ import annotations

import logging
from collections.abc import Callable

import dagster as dg

from mmfs_assets.assets import ALL_ASSETS
from mmfs_assets.ingest.drop_source import drop_source
from mmfs_assets.instance.admission import admitted
from mmfs_assets.instance.home import home_from_env, open_instance
from mmfs_assets.instance.liveness import run_tags
from mmfs_assets.partitions import DROPS
from mmfs_assets.resources import build_resources
from mmfs_assets.settings import Settings

ASSET_NAMES = [a.key.to_user_string() for a in ALL_ASSETS]
# assets that recompute every row of the partition when their run config says ``force: true``
FORCEABLE = [a.key.to_user_string() for a in ALL_ASSETS
             if a.key.to_user_string() not in ("videos", "dup_group", "drop_stats")]  # the fills (FillConfig)
log = logging.getLogger("mmfs")
# Dagster's console logger prints a failed step's whole traceback (twice: the event and the run failure);
# the CLI reports failures itself (step_failures) and replays the run's warnings (run_warnings).
QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
DEBUG_LOGS = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


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
    force: bool = False,
    debug: bool = False,
) -> dg.ExecuteInProcessResult:
    """Register drop ``key`` as a partition if needed and materialize ``select`` (default: all) for it.

    ``force``: the selected feature assets (and ``video_metadata``) recompute every row of the drop,
    not only the rows whose producer is not the current one (their ``FillConfig.force``).

    The run starts once its pools are free (:mod:`mmfs_assets.instance.admission`: dead CLI runs are marked
    failed first; while a pool is busy ``notify`` hears which run holds it, and Ctrl-C stops the wait with
    nothing claimed). It runs in this process, recorded in ``instance`` with this host and pid as tags.
    """
    settings = settings or Settings.from_env()
    if reason := drop_source(settings.drop_dir, settings.storage_options).refusal(key):
        raise MaterializeError(reason)
    names = select or ASSET_NAMES
    unknown = sorted(set(names) - set(ASSET_NAMES))
    if unknown:
        raise MaterializeError(f"unknown asset(s) {unknown}; known: {ASSET_NAMES}")
    if not instance.has_dynamic_partition(DROPS, key):
        instance.add_dynamic_partitions(DROPS, [key])
    pools = sorted({a.op.pool for a in ALL_ASSETS if a.key.to_user_string() in names and a.op.pool})
    run_config: dict = dict(DEBUG_LOGS if debug else QUIET_LOGS if quiet else {})
    if force:
        run_config["ops"] = {n: {"config": {"force": True}} for n in names if n in FORCEABLE}
    home = None if instance.is_ephemeral else home_from_env()
    with admitted(instance, home, pools, notify or (lambda msg: log.warning(msg)), f"mmfs materialize {key}"):
        return dg.materialize(
            ALL_ASSETS,
            selection=names,
            partition_key=key,
            instance=instance,
            resources=build_resources(settings),
            run_config=run_config or None,
            raise_on_error=False,
            tags={"mmfs/launched_by": "cli", **run_tags()},
        )


def result_summary(result: dg.ExecuteInProcessResult) -> list[tuple[str, dict]]:
    """(asset, metadata as plain values) for every materialization of the run."""
    out = []
    for ev in result.get_asset_materialization_events():
        mat = ev.step_materialization_data.materialization
        out.append((mat.asset_key.to_user_string(), {k: v.value for k, v in mat.metadata.items()}))
    return out


def step_failures(result: dg.ExecuteInProcessResult) -> list[tuple[str, str]]:
    """(step, the failure's own message) per failed step: a ``dg.Failure``'s description, else the error's first line."""
    out = []
    for ev in result.all_events:
        if ev.is_step_failure:
            data = ev.step_failure_data
            if data.user_failure_data is not None and data.user_failure_data.description:
                message = data.user_failure_data.description
            else:
                err = data.error.cause if data.error and data.error.cause else data.error
                message = err.message.strip().splitlines()[0] if err and err.message.strip() else "failed"
            out.append((ev.step_key or "run", message.strip()))
    return out


def interrupted(result: dg.ExecuteInProcessResult) -> bool:
    """Whether a step stopped because the process was interrupted (Ctrl-C, SIGTERM): Dagster turns the
    signal into an error raised inside the running step, and the run ends failed."""
    for ev in result.all_events:
        if ev.is_step_failure and ev.step_failure_data.error is not None:
            err = ev.step_failure_data.error
            if "DagsterExecutionInterruptedError" in (err.cls_name, err.cause.cls_name if err.cause else None):
                return True
    return False


def run_warnings(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """The run's own warnings (the assets' ``context.log.warning``), which the quiet console logger hides."""
    return [
        e.user_message for e in instance.all_logs(run_id)
        if not e.is_dagster_event and _level(e.level) >= logging.WARNING and e.user_message
    ]


def _level(level: int | str) -> int:
    return level if isinstance(level, int) else logging.getLevelNamesMapping().get(level.upper(), logging.INFO)


def profile_line(settings: Settings) -> str:
    """Which models this process fills with, and how to switch (the one setting: ``MMFS_MODEL_PROFILE``)."""
    if settings.model_profile == "tiny":
        return ("models: [yellow]tiny[/yellow] random-init test models (values are meaningless; "
                "MMFS_MODEL_PROFILE=pretrained uses the real weights, in the CLI, the demo and the UI alike)")
    return "models: [cyan]pretrained[/cyan] (MMFS_CLIP_MODEL, MMFS_DEPTH_MODEL, MMFS_CAPTION_MODEL or their defaults)"
