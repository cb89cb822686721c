"""Fixes for two busy waits in Dagster 1.13's pool-slot wait, applied when MMFS is imported.

``InstanceConcurrencyContext.interval_to_next_pending_claim_check`` returns
``min([0, *time_until_each_retry])``, which is never positive, so ``ActiveExecution.sleep_til_ready``
never sleeps: a step blocked on a pool spins one core at 100% (measured: ~700k loop iterations and 8
database claims in 11 s). On a 2-core machine three blocked runs starve the one holding the slot. The
intended value is the time until the earliest retry, not below zero; the claim schedule itself (1 s
backoff growing to 15 s) is unchanged.

The multiprocess executor (the default for runs launched by the daemon) never calls ``sleep_til_ready``:
while its steps wait for a slot and none is running, its loop asks for steps to execute again at once
(measured: two runs waiting for ``lance_ingest`` at 94% CPU each, starving the ingest that held the slot,
the daemon and the webserver for minutes on 2 cores). ``get_steps_to_execute`` therefore sleeps until the
next claim check (at most 1 s) when it returns nothing, nothing is in flight and claims are pending.
"""

from __future__ import annotations

import time

from dagster._core.execution.plan.active import ActiveExecution
from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext

_MAX_SLEEP_S = 1.0  # still notices a freed slot, an interrupt or a retry within a second


def _interval_to_next_pending_claim_check(self) -> float:
    if not self._pending_claims:
        return 0.0
    now = time.time()
    waits = [ready_at - now for ready_at in self._pending_timeouts.values()]
    return min(_MAX_SLEEP_S, max(0.0, min(waits))) if waits else 0.0


_MIN_SLEEP_S = 0.05  # a claim check due now is made on the next call; this only bounds the loop's rate
_get_steps_to_execute = ActiveExecution.get_steps_to_execute


def _get_steps_to_execute_or_wait(self, limit: int | None = None):
    steps = _get_steps_to_execute(self, limit)
    ctx = self._instance_concurrency_context
    if not steps and not self._in_flight and ctx is not None and ctx.has_pending_claims():
        time.sleep(max(_MIN_SLEEP_S, ctx.interval_to_next_pending_claim_check()))
    return steps


def apply() -> None:
    InstanceConcurrencyContext.interval_to_next_pending_claim_check = _interval_to_next_pending_claim_check
    if getattr(ActiveExecution.get_steps_to_execute, "__name__", "") != _get_steps_to_execute_or_wait.__name__:
        ActiveExecution.get_steps_to_execute = _get_steps_to_execute_or_wait


apply()
