"""When a run that ``mmfs materialize`` executes in its own process may start: its pools are free.

Pools are enforced at run granularity (``dagster.yaml``: ``concurrency.pools.granularity: run``): the
daemon's run queue starts a queued run only when no active run uses one of its pools, and no step ever
claims a slot (so no step waits inside Dagster, where a wait spins a core and ignores Ctrl-C). A run the
CLI executes in its own process does not go through the queue, so the CLI admits it itself:

1. it marks runs of dead CLI processes failed (:mod:`.liveness`), so a killed run never blocks the next;
2. it takes a lock file per pool in ``$DAGSTER_HOME/.mmfs-pools/`` (another CLI on this home waits
   there; the kernel drops the lock when the process dies, so nothing is left claimed);
3. it waits until no active run of the instance (one the daemon launched, or another machine's CLI on
   a shared storage) uses one of its pools: the queue counts the CLI's run once it exists, so the two
   do not start the same pool twice except in the instant between this check and the run's creation.

Waiting sleeps (no CPU), says every :data:`NOTICE_EVERY_S` which run holds the pool, and stops on Ctrl-C
like any Python loop: nothing has been created or claimed yet.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import dagster as dg
from dagster import RunsFilter

from mmfs_assets.instance.liveness import ACTIVE, PID_TAG, free_dead_runs
from mmfs_assets.lock_files import lock_file

NOTICE_EVERY_S = 10.0
POLL_S = 1.0
LOCK_DIR = ".mmfs-pools"


def run_pools(run: dg.DagsterRun) -> set[str]:
    """The pools a run's steps use (what the run queue counts it as holding)."""
    concurrency = run.run_op_concurrency
    return set(concurrency.all_pools) if concurrency is not None and concurrency.all_pools else set()


def holders(instance: dg.DagsterInstance, pools: set[str], me: str | None = None) -> dict[str, list[str]]:
    """Per pool of ``pools``, the active runs that use it (one line each)."""
    out: dict[str, list[str]] = {}
    for rec in instance.get_run_records(RunsFilter(statuses=ACTIVE)):
        run = rec.dagster_run
        if run.run_id == me:
            continue
        for pool in run_pools(run) & pools:
            part = (run.tags or {}).get("dagster/partition")
            pid = (run.tags or {}).get(PID_TAG)
            out.setdefault(pool, []).append(
                f"run {run.run_id}" + (f" (drop {part}" if part else " (") + f", {run.status.value}"
                + (f", pid {pid})" if pid else ")"))
    return out


@contextlib.contextmanager
def pool_locks(home: Path, pools: list[str], notify: Callable[[str], None], label: str) -> Iterator[None]:
    """Exclusive lock files for ``pools`` (sorted: no deadlock between two CLIs), held for the whole run."""
    d = home / LOCK_DIR
    d.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        for pool in sorted(pools):
            stack.enter_context(lock_file(d / f"{pool}.lock", label, partial(_waiting_for, pool), notify, mode=0o644,
                                          poll_s=POLL_S, notice_every_s=NOTICE_EVERY_S))
        yield


def _waiting_for(pool: str, who: str) -> str:
    return f"waiting for pool {pool!r}, held by {who} (Ctrl-C to stop)"


def wait_for_pools(instance: dg.DagsterInstance, pools: list[str], notify: Callable[[str], None]) -> None:
    """Return once no active run of the instance uses one of ``pools`` (dead CLI runs are marked failed)."""
    last = -NOTICE_EVERY_S
    want = set(pools)
    while True:
        free_dead_runs(instance, log=notify)
        busy = holders(instance, want)
        if not busy:
            return
        if time.monotonic() - last >= NOTICE_EVERY_S:
            for pool, runs in sorted(busy.items()):
                notify(f"waiting for pool {pool!r}, held by {'; '.join(runs)} (Ctrl-C to stop)")
            last = time.monotonic()
        time.sleep(POLL_S)


@contextlib.contextmanager
def admitted(instance: dg.DagsterInstance, home: Path | None, pools: list[str], notify: Callable[[str], None],
             label: str) -> Iterator[None]:
    """Hold the pool locks and wait for the instance's runs: the CLI's run may start inside this block.
    ``home`` None (an ephemeral instance): no other run can share its pools, nothing to wait for."""
    if home is None or not pools:
        yield
        return
    with pool_locks(home, pools, notify, label):
        wait_for_pools(instance, pools, notify)
        yield
