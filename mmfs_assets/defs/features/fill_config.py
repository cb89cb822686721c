"""What every fill asset shares: its run config (``force``), its automation condition, how an incomplete fill fails."""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from mmfs_assets.engine.report import FillIncomplete
from mmfs_assets.engine.shard_reports import FleetFill
from mmfs_assets.settings import Settings


class FillConfig(dg.Config):
    """Run config of the fill assets: the UI's launchpad (shift-click *Materialize*) or ``mmfs materialize --force``."""

    force: bool = Field(
        default=False,
        description=(
            "Recompute every row of the partition, also rows whose producer is already the current one "
            "(e.g. after a model's weights were replaced under the same name). Off: only rows that are "
            "missing or were made by another producer are computed."
        ),
    )


def fill_automation(settings: Settings | None = None) -> dg.AutomationCondition:
    """Eager (fill new partitions once their upstream lands); with ``MMFS_RECOMPUTE_ON_CODE_CHANGE=1`` also
    every partition of an asset whose code version changed since the previous evaluation."""
    settings = settings or Settings.from_env()
    eager = dg.AutomationCondition.eager()
    if not settings.recompute_on_code_change:
        return eager
    AC = dg.AutomationCondition
    changed = AC.code_version_changed() & ~AC.in_progress() & ~AC.any_deps_missing() & ~AC.any_deps_in_progress()
    return (eager | changed.with_label("code_version_changed")).with_label("eager or code version changed")


def backfill_policy(settings: Settings, engine: str) -> dg.BackfillPolicy | None:
    """``MMFS_BACKFILL_POLICY``: ``single`` (a backfill of many partitions is ONE run that feeds all their
    fragments to the engine, still one materialization per partition), ``multi`` (one run per partition), or
    ``auto``: single with the ``ray`` engine, one run per partition with ``local`` (docs/ray.md)."""
    single = settings.backfill_policy == "single" or (settings.backfill_policy == "auto" and engine == "ray")
    return dg.BackfillPolicy.single_run() if single else None  # None: Dagster's default, one run per partition


def incomplete_failure(fill: FleetFill | FillIncomplete) -> dg.Failure:
    """The step's failure for a fill that committed what it could but left rows for a later run (storage
    unreachable, a worker that could not start, a shard out of retries) or lost values to a rollback: a failed
    step the UI shows, with the reports' numbers, that Dagster may retry (a re-run computes only what is missing)."""
    if isinstance(fill, FillIncomplete):
        reports, why = [fill.report], str(fill)
    else:
        reports = [fill.reports[k] for k in fill.problems]
        why = "\n".join(fill.problems[k] for k in fill.problems)
    undone = [r.undone_by_rollback_version for r in reports if r.undone_by_rollback_version]
    versions = [r.lance_version for r in reports if r.lance_version is not None]
    return dg.Failure(
        description=why,
        metadata={
            "partitions_incomplete": ", ".join(r.drop_id for r in reports),
            "rows_deferred": sum(r.rows_deferred for r in reports),
            "rows_computed": sum(r.rows_computed for r in reports),
            "rows_errored": sum(r.rows_errored for r in reports),
            "rows_already_current": sum(r.rows_already_current for r in reports),
            "shard_retries": sum(r.shard_retries for r in reports),
            "deferred_reasons": "\n".join([x for r in reports for x in r.deferred_reasons][:10]),
            "undone_by_rollback_version": undone[0] if undone else -1,
            "lance_version": max(versions) if versions else -1,
        },
        allow_retries=True,
    )
