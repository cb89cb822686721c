"""What every fill asset shares: its run config (``force``) and its automation condition."""

from __future__ import annotations

import dagster as dg
from pydantic import Field

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
