"""Running assets in this process without hanging on a pool: say what we wait for, stop on Ctrl-C.

Dagster's in-process executor waits for a pool slot in a loop that logs "Step blocked by limit for pool"
once, at DEBUG level, and wraps the whole run in ``capture_interrupts()``: SIGINT and SIGTERM only set a
flag that this loop never reads, so a blocked ``materialize`` prints nothing and cannot be stopped.

:func:`guarded_materialize` therefore (1) frees the slots of dead runs (:mod:`.liveness`), (2) waits for a
free slot in its own loop first, saying which run holds it (Ctrl-C works there as usual), and (3) runs
the assets with a watchdog thread that repeats that message if the run still blocks (another run took the
slot in between), hands a free slot to waiting steps (Dagster loses that wake-up when a slot is freed
between its check and its enqueue), and turns an interrupt Dagster swallowed into a ``KeyboardInterrupt``
in the main thread, after marking the run canceling. The run then ends CANCELED and leaves no slot behind.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
import uuid
from collections.abc import Callable

import dagster as dg
from dagster import RunsFilter
from dagster._utils.interrupts import check_captured_interrupt, pop_captured_interrupt

from mmfs_assets.instance import dagster_patches  # noqa: F401 - fixes a busy wait on pool slots
from mmfs_assets.instance.liveness import (
    HOST_TAG,
    PoolUser,
    free_dead_runs,
    pool_users,
    this_host,
    wake_lost_claims,
)

TOKEN_TAG = "mmfs/invocation"
NOTICE_EVERY_S = 10.0
SWEEP_EVERY_S = 5.0


log = logging.getLogger(__name__)

def _holders(users: list[PoolUser], me: str | None = None) -> str:
    held = [u for u in users if u.run_id != me and u.state in ("claimed", "assigned")]
    return ", ".join(f"run {u.run_id} ({u.step_key}, {u.status}, pid {u.pid})" for u in held) or "nobody"


def _free_slots(instance: dg.DagsterInstance, pool: str) -> tuple[bool, list[PoolUser]]:
    info = instance.event_log_storage.get_concurrency_info(pool)
    users = pool_users(instance, pool)
    taken = sum(u.state in ("claimed", "assigned") for u in users)
    limit = info.slot_count if info.slot_count is not None else info.limit
    return limit is None or limit <= 0 or taken < limit, users


def wait_for_pools(instance: dg.DagsterInstance, pools: list[str], notify: Callable[[str], None],
                   poll_s: float = 1.0) -> None:
    """Block until each pool has a free slot, telling ``notify`` what we wait for (Ctrl-C interrupts)."""
    last = 0.0
    while True:
        free_dead_runs(instance, pools, log=notify)
        busy = [(p, users) for p in pools for ok, users in [_free_slots(instance, p)] if not ok]
        if not busy:
            return
        if time.monotonic() - last >= NOTICE_EVERY_S:
            for pool, users in busy:
                notify(f"waiting for a slot of pool {pool!r}, held by {_holders(users)} (Ctrl-C to stop)")
            last = time.monotonic()
        time.sleep(poll_s)


def _raise_in_main(exc: type[BaseException]) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(threading.main_thread().ident or 0), ctypes.py_object(exc)
    )


def guarded_materialize(assets, *, instance: dg.DagsterInstance, pools: list[str],
                        notify: Callable[[str], None], tags: dict[str, str] | None = None,
                        **kwargs) -> dg.ExecuteInProcessResult:
    """``dg.materialize`` that frees dead runs' slots, says what it waits for and stops on Ctrl-C."""
    wait_for_pools(instance, pools, notify)
    token = uuid.uuid4().hex
    tags = {**(tags or {}), TOKEN_TAG: token, HOST_TAG: this_host()}
    done = threading.Event()

    # An ephemeral instance lives in this process's memory on one shared SQLite connection: no other run
    # can hold its pools, and a second thread reading it while the run writes fails the run's own write
    # ("database table is locked"). The watchdog then only turns a stuck Ctrl-C into a KeyboardInterrupt.
    use_db = not instance.is_ephemeral

    def watchdog() -> None:
        state: dict = {"last": 0.0, "last_sweep": time.monotonic(), "interrupted_at": None, "run_id": None}
        while not done.wait(0.5):
            try:
                tick(state)
            except Exception as e:  # noqa: BLE001 - a busy database must not kill the thread that handles Ctrl-C
                log.debug("pool watchdog: %s: %s", type(e).__name__, e)

    def tick(st: dict) -> None:
        if use_db and st["run_id"] is None:
            runs = instance.get_runs(RunsFilter(tags={TOKEN_TAG: token}), limit=1)
            st["run_id"] = runs[0].run_id if runs else None
        run_id = st["run_id"]
        if check_captured_interrupt():
            st["interrupted_at"] = st["interrupted_at"] or time.monotonic()
            if time.monotonic() - st["interrupted_at"] > 1.0:  # Dagster did not act on it: it is stuck waiting
                pop_captured_interrupt()
                if run_id is not None:
                    run = instance.get_run_by_id(run_id)
                    if run is not None and not run.is_finished:
                        instance.report_run_canceling(run, message="interrupted (Ctrl-C or SIGTERM)")
                notify(f"interrupted: stopping run {run_id}" if run_id else "interrupted: stopping")
                _raise_in_main(KeyboardInterrupt)
                st["interrupted_at"] = time.monotonic() + 5
        else:
            st["interrupted_at"] = None
        if not use_db or run_id is None:
            return
        if time.monotonic() - st["last_sweep"] >= SWEEP_EVERY_S:  # a dead waiter must not get the freed slot
            free_dead_runs(instance, pools, log=notify)
            st["last_sweep"] = time.monotonic()
        wake_lost_claims(instance, pools)
        if time.monotonic() - st["last"] < NOTICE_EVERY_S:
            return
        for pool in pools:
            users = pool_users(instance, pool)
            mine = [u for u in users if u.run_id == run_id]
            if mine and all(u.state == "waiting" for u in mine):
                notify(f"run {run_id} waits for a slot of pool {pool!r}, held by {_holders(users, run_id)}"
                       " (Ctrl-C to stop)")
                st["last"] = time.monotonic()

    t = threading.Thread(target=watchdog, daemon=True, name="mmfs-pool-watchdog")
    t.start()
    try:
        return dg.materialize(assets, instance=instance, tags=tags, **kwargs)
    finally:
        done.set()
        t.join(timeout=2)
