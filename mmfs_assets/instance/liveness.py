"""Runs whose process is gone: find them among the instance's active runs and mark them failed.

A run killed with SIGKILL (or a machine that lost power) never writes its end: it stays STARTED, and with
pools enforced at run granularity (``dagster.yaml``) the run queue counts it as holding its pools, so every
later run of those pools would wait forever. For runs the daemon launched, Dagster's code server marks a
run failed when its worker dies. Runs started by ``mmfs materialize`` in its own process are MMFS's to
judge: the CLI tags them with its host and pid (:func:`run_tags`), and the CLI before each run and the
``dead_run_reaper`` sensor mark such a run failed once its process is gone (same host only: a pid on
another machine or in another container means nothing here) or the pid now belongs to a newer process.

Only public instance methods are used (run records, run tags, ``report_run_failed``); nothing here
touches Dagster's pool slots, which run granularity no longer claims.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import dagster as dg
from dagster import DagsterEventType, DagsterRunStatus, RunsFilter

HOST_TAG = "mmfs/host"
PID_TAG = "mmfs/pid"
ACTIVE = [DagsterRunStatus.STARTING, DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]


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


def run_tags() -> dict[str, str]:
    """The tags of a run this process executes itself (``mmfs materialize``): where it lives."""
    return {HOST_TAG: this_host(), PID_TAG: str(os.getpid())}


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


def run_pid(instance: dg.DagsterInstance, run: dg.DagsterRun) -> int | None:
    """The pid of the process that executes the run: its ``mmfs/pid`` tag, else the process that emitted
    its RUN_START (a run the daemon launched)."""
    tag = (run.tags or {}).get(PID_TAG)
    if tag and tag.isdigit():
        return int(tag)
    recs = instance.get_records_for_run(run.run_id, of_type=DagsterEventType.RUN_START, limit=1).records
    if not recs or recs[0].event_log_entry.dagster_event is None:
        return None
    return recs[0].event_log_entry.dagster_event.pid


@dataclass(frozen=True)
class DeadRun:
    run_id: str
    pid: int
    status: str


def dead_runs(instance: dg.DagsterInstance) -> list[DeadRun]:
    """Active runs of processes this machine ran (``mmfs/host`` is this host, ``mmfs/pid`` set) that are gone."""
    host = this_host()
    out = []
    for rec in instance.get_run_records(RunsFilter(statuses=ACTIVE, tags={HOST_TAG: host})):
        run = rec.dagster_run
        tag = (run.tags or {}).get(PID_TAG, "")
        if not tag.isdigit():
            continue
        started = rec.start_time or rec.create_timestamp.timestamp()
        if not pid_alive(int(tag), started):
            out.append(DeadRun(run.run_id, int(tag), run.status.value))
    return out


def free_dead_runs(instance: dg.DagsterInstance, log=None) -> list[str]:
    """Mark the runs of :func:`dead_runs` failed (the queue then stops counting their pools); their ids."""
    freed = []
    for d in dead_runs(instance):
        run = instance.get_run_by_id(d.run_id)
        if run is None or run.is_finished:
            continue
        instance.report_run_failed(run, f"MMFS: the run's process (pid {d.pid}) is gone; marked failed so its "
                                        "pools are free again.")
        if log:
            log(f"marked dead run {d.run_id} failed (pid {d.pid} is gone, was {d.status}): its pools are free")
        freed.append(d.run_id)
    return freed
