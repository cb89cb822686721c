"""What every fill asset shares: its run config (``force``), its automation condition, how an incomplete fill fails."""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from mmfs_assets.engine.report import FillIncomplete
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


def incomplete_failure(e: FillIncomplete) -> dg.Failure:
    """The step's failure for a fill that committed what it could but left rows for a later run (storage
    unreachable, a worker that could not start) or lost values to a rollback: a failed step the UI shows,
    with the report's numbers, that Dagster may retry (a re-run computes only what is missing)."""
    rep = e.report
    return dg.Failure(
        description=str(e),
        metadata={
            "rows_deferred": rep.rows_deferred,
            "rows_computed": rep.rows_computed,
            "rows_errored": rep.rows_errored,
            "rows_already_current": rep.rows_already_current,
            "deferred_reasons": "\n".join(rep.deferred_reasons[:10]),
            "undone_by_rollback_version": rep.undone_by_rollback_version if rep.undone_by_rollback_version else -1,
            "lance_version": rep.lance_version if rep.lance_version is not None else -1,
        },
        allow_retries=True,
    )
