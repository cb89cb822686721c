"""Materializing a drop in this process: a run of the code location's asset job, from the same Definitions
the UI loads (:func:`mmfs_assets.definitions.build_definitions`, for the CLI's settings)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import dagster as dg

from mmfs_assets.definitions import build_definitions
from mmfs_assets.defs.ingest.partitions import DROPS, drops_partitions
from mmfs_assets.ingest.drop_source import drop_source
from mmfs_assets.instance.admission import admitted
from mmfs_assets.instance.home import home_from_env, open_instance
from mmfs_assets.instance.liveness import run_tags
from mmfs_assets.settings import Settings

# the drop assets without a ``force`` in their run config; every other one is a fill (FillConfig), which
# recomputes every row of the partition when its run config says ``force: true``
NOT_FORCEABLE = ("videos", "dup_group", "drop_stats")
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


def drop_assets(defs: dg.Definitions) -> dict[str, dg.AssetsDefinition]:
    """The assets of ``defs`` partitioned by drop, by name: what ``mmfs materialize`` can select (the
    unpartitioned ``search_indices`` follows the fills in the UI)."""
    return {a.key.to_user_string(): a for a in defs.assets or []
            if isinstance(a, dg.AssetsDefinition) and not isinstance(a, dg.AssetChecksDefinition)
            and a.partitions_def == drops_partitions}


def asset_job(defs: dg.Definitions) -> dg.JobDefinition:
    """The implicit asset job (``__ASSET_JOB``) of ``defs``'s assets, resources and executor, as ``mmfs
    materialize`` runs it: without the standalone ``<asset>_current`` checks. Selecting an asset in a run
    selects every check on it, and those scan the whole table; they stay the ``staleness_sensor``'s to
    evaluate, so a CLI run executes what it always did (the selected assets and the checks they report)."""
    assets = [a for a in defs.assets or [] if not isinstance(a, dg.AssetChecksDefinition)]
    return dg.Definitions(assets=assets, resources=defs.resources, executor=defs.executor,
                          loggers=defs.loggers).resolve_implicit_global_asset_job_def()


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

    The run is a run of the code location's asset job (:func:`asset_job`), from the Definitions the UI loads
    built for ``settings`` (the same assets, resources and executor definition; executed in this process).

    ``force``: the selected feature assets (and ``video_metadata``) recompute every row of the drop,
    not only the rows whose producer is not the current one (their ``FillConfig.force``).

    The run starts once its pools are free (:mod:`mmfs_assets.instance.admission`: dead CLI runs are marked
    failed first; while a pool is busy ``notify`` hears which run holds it, and Ctrl-C stops the wait with
    nothing claimed). It runs in this process, recorded in ``instance`` with this host and pid as tags.
    """
    settings = settings or Settings.from_env()
    if reason := drop_source(settings.drop_dir, settings.storage_options).refusal(key):
        raise MaterializeError(reason)
    defs = build_definitions(settings=settings)
    assets = drop_assets(defs)
    names = select or list(assets)
    unknown = sorted(set(names) - set(assets))
    if unknown:
        raise MaterializeError(f"unknown asset(s) {unknown}; known: {list(assets)}")
    job = asset_job(defs)
    if not instance.has_dynamic_partition(DROPS, key):
        instance.add_dynamic_partitions(DROPS, [key])
    pools = sorted({p for n in names if (p := assets[n].op.pool)})
    run_config: dict = dict(DEBUG_LOGS if debug else QUIET_LOGS if quiet else {})
    if force:
        run_config["ops"] = {n: {"config": {"force": True}} for n in names if n not in NOT_FORCEABLE}
    home = None if instance.is_ephemeral else home_from_env()
    with admitted(instance, home, pools, notify or (lambda msg: log.warning(msg)), f"mmfs materialize {key}"):
        return job.execute_in_process(
            run_config=run_config or None,
            instance=instance,
            partition_key=key,
            asset_selection=[dg.AssetKey(n) for n in names],
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
