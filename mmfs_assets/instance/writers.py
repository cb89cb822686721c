"""Which runs are writing the table right now: what rollback and compaction wait for.

A writer is a run, not finished, whose process is alive, that materializes one of the table's writing
assets (ingest, metadata, features), or a run whose assets are unknown (conservative). Runs of dead
CLI processes are marked failed first (:func:`~mmfs_assets.instance.liveness.free_dead_runs`), so a killed
fill does not block maintenance forever. Runs made with ``--ephemeral`` are in no instance and cannot be
seen: the Lance commit protocol still keeps them correct (a compaction that races a fill loses its commit
and is retried later; a fill that races a compaction retries its cheap file write).
"""

from __future__ import annotations

import dagster as dg
from dagster import RunsFilter

from mmfs_assets.instance.liveness import ACTIVE, free_dead_runs, pid_alive, run_pid

NON_WRITING_ASSETS = {"search_indices", "drop_stats"}
NON_WRITING_JOBS = {"snapshot_job", "maintenance_job", "mmfs_rollback"}  # mmfs_rollback: the flags of a rollback


def _assets(instance: dg.DagsterInstance, run: dg.DagsterRun) -> list[str]:
    """The assets (or steps) a run executes: its asset selection, else its plan's step keys."""
    if run.asset_selection:
        return sorted(k.to_user_string() for k in run.asset_selection)
    try:
        snap = instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id) if run.execution_plan_snapshot_id else None
    except Exception:  # noqa: BLE001 - unknown: judged by its job name
        snap = None
    return sorted(snap.step_keys_to_execute) if snap is not None else []


def _writes(run: dg.DagsterRun, assets: list[str]) -> bool:
    if run.job_name in NON_WRITING_JOBS:
        return False
    if not assets:
        return not run.asset_check_selection  # a check-only run reads; anything unknown may write
    return any(a not in NON_WRITING_ASSETS for a in assets)


def active_writers(instance: dg.DagsterInstance, *, exclude_run: str | None = None) -> list[str]:
    """One line per live run that may be writing the table (empty: no writer)."""
    free_dead_runs(instance)
    out = []
    for rec in instance.get_run_records(RunsFilter(statuses=ACTIVE)):
        run = rec.dagster_run
        assets = _assets(instance, run)
        if run.run_id == exclude_run or not _writes(run, assets):
            continue
        pid = run_pid(instance, run)
        if pid is not None and not pid_alive(pid, rec.start_time):
            continue
        part = (run.tags or {}).get("dagster/partition", "")
        out.append(f"run {run.run_id[:8]} ({', '.join(assets) or run.job_name}{' [' + part + ']' if part else ''}, {run.status.value})")
    return out


class WriterActive(RuntimeError):
    """Another run is writing the table; the message names it."""
