"""A fix for a busy wait in Dagster 1.13's pool-slot wait, applied when MMFS is imported.

``InstanceConcurrencyContext.interval_to_next_pending_claim_check`` returns
``min([0, *time_until_each_retry])``, which is never positive, so ``ActiveExecution.sleep_til_ready``
never sleeps: a step blocked on a pool spins one core at 100% (measured: ~700k loop iterations and 8
database claims in 11 s). On a 2-core machine three blocked runs starve the one holding the slot. The
intended value is the time until the earliest retry, not below zero; the claim schedule itself (1 s
backoff growing to 15 s) is unchanged.
"""

from __future__ import annotations

import time

from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext

_MAX_SLEEP_S = 1.0  # still notices a freed slot, an interrupt or a retry within a second


def _interval_to_next_pending_claim_check(self) -> float:
    if not self._pending_claims:
        return 0.0
    now = time.time()
    waits = [ready_at - now for ready_at in self._pending_timeouts.values()]
    return min(_MAX_SLEEP_S, max(0.0, min(waits))) if waits else 0.0


def apply() -> None:
    InstanceConcurrencyContext.interval_to_next_pending_claim_check = _interval_to_next_pending_claim_check


apply()
