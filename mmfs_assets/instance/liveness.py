"""Runs whose process is gone: find them in the pools, free their slots, mark them failed.

A run killed with SIGKILL (or a machine that lost power) never writes its end: it stays STARTED and keeps
the pool slots its steps claimed, and every later step of that pool waits forever. Dagster's run monitoring
cannot tell for runs of the default run launcher (``supports_check_run_worker_health`` is False); its code
server marks runs failed whose worker it saw die, and ``free_slots_after_run_end_seconds`` frees the slots
of finished runs, but only while the daemon runs and only for runs the code server launched.

So MMFS checks itself, from the CLI before each run and from the ``dead_run_reaper`` sensor: for every run
holding or waiting for a slot, the process that emitted its RUN_START must still exist (same host: the
default SQLite storage lives on one machine; runs tagged with another ``mmfs/host``, and untagged runs on a
shared storage such as Postgres, are left alone) and be older than the run (a recycled pid is not alive).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import dagster as dg
from dagster import DagsterEventType
from dagster._core.storage.dagster_run import FINISHED_STATUSES

HOST_TAG = "mmfs/host"


@dataclass(frozen=True)
class PoolUser:
    run_id: str
    step_key: str
    state: str  # "claimed", "assigned" (slot given, not taken yet) or "waiting"
    status: str | None  # the run's status, None if the run is unknown
    pid: int | None
    alive: bool


def this_host() -> str:
    """Where a pid means something: host name, boot id and pid namespace (containers sharing a
    hostname or a SQLite volume see different processes under the same pid)."""
    parts = [socket.gethostname()]
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            parts.append(f.read().strip()[:8])
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    except OSError:
        pass
    return "/".join(parts)


def tag_run_host(instance: dg.DagsterInstance, run_id: str) -> None:
    """Tag a run with the machine its process runs on (called by MMFS's assets when a step starts), so
    liveness checks elsewhere never judge a pid from another machine or container."""
    run = instance.get_run_by_id(run_id)
    if run is not None and HOST_TAG not in (run.tags or {}):
        instance.add_run_tags(run_id, {HOST_TAG: this_host()})


def wake_lost_claims(instance: dg.DagsterInstance, pools: list[str] | None = None) -> None:
    """Hand free slots to waiting steps: Dagster's claim checks for a free slot and then enqueues, so a
    slot freed in between is handed to nobody and the waiter sleeps forever (a lost wake-up)."""
    storage = instance.event_log_storage
    for pool in pools if pools is not None else sorted(storage.get_concurrency_keys()):
        if storage.has_unassigned_slots(pool):
            storage.assign_pending_steps([pool])


def run_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The pid of the process that orchestrates the run (the one that emitted RUN_START)."""
    recs = instance.get_records_for_run(run_id, of_type=DagsterEventType.RUN_START, limit=1).records
    if not recs or recs[0].event_log_entry.dagster_event is None:
        return None
    return recs[0].event_log_entry.dagster_event.pid


def _process_start(pid: int) -> float | None:
    """Start time (epoch seconds) of a local process, from /proc; None where /proc is absent."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith("btime"))
    except (OSError, StopIteration, ValueError, IndexError):
        return None
    return btime + ticks / os.sysconf("SC_CLK_TCK")


def pid_alive(pid: int | None, not_before: float | None = None) -> bool:
    """Whether process ``pid`` exists and (when ``not_before`` is given) started before that time."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    if not_before is not None:
        started = _process_start(pid)
        if started is not None and started > not_before + 1:
            return False  # the pid was recycled by a newer process
    return True


def _local(instance: dg.DagsterInstance, run: dg.DagsterRun | None) -> bool:
    """Whether the run's process would be on this machine: tagged with this host, or (untagged, e.g.
    launched by the daemon) on an instance whose SQLite storage only processes of this machine use."""
    host = (run.tags or {}).get(HOST_TAG) if run else None
    if host is not None:
        return host == this_host()
    return "sqlite" in type(instance.run_storage).__name__.lower()


def pool_users(instance: dg.DagsterInstance, pool: str) -> list[PoolUser]:
    """Every run holding, being assigned or waiting for a slot of ``pool``, with its liveness."""
    info = instance.event_log_storage.get_concurrency_info(pool)
    rows = [(s.run_id, s.step_key, "claimed") for s in info.claimed_slots]
    claimed = {(r, s) for r, s, _ in rows}
    rows += [
        (p.run_id, p.step_key, "assigned" if p.assigned_timestamp else "waiting")
        for p in info.pending_steps
        if (p.run_id, p.step_key) not in claimed
    ]
    out = []
    for run_id, step_key, state in rows:
        rec = instance.get_run_record_by_id(run_id)
        run = rec.dagster_run if rec else None
        pid = run_pid(instance, run_id) if run else None
        if run is None or run.status in FINISHED_STATUSES:
            alive = False
        elif not _local(instance, run):
            alive = True  # another host's process: not ours to judge
        elif pid is None:
            alive = True  # not started yet (no RUN_START): the launcher's start timeout covers it
        else:
            alive = pid_alive(pid, rec.start_time if rec else None)
        out.append(PoolUser(run_id, step_key, state, run.status.value if run else None, pid, alive))
    return out


def free_dead_runs(instance: dg.DagsterInstance, pools: list[str] | None = None, log=None) -> list[str]:
    """Free the slots of runs whose process is gone (marking unfinished ones failed); returns their ids."""
    storage = instance.event_log_storage
    pools = list(pools) if pools is not None else sorted(storage.get_concurrency_keys())
    freed: list[str] = []
    for pool in pools:
        for u in pool_users(instance, pool):
            if u.alive or u.run_id in freed:
                continue
            storage.free_concurrency_slots_for_run(u.run_id)
            run = instance.get_run_by_id(u.run_id)
            if run is not None and not run.is_finished:
                instance.report_run_failed(
                    run, f"MMFS: the run's process (pid {u.pid}) is gone; its pool slots were freed."
                )
            if log:
                log(f"freed the {pool!r} pool slot of dead run {u.run_id} (pid {u.pid}, was {u.status})")
            freed.append(u.run_id)
    return freed
