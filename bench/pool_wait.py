"""CPU burnt by a run that waits for a pool slot: Dagster 1.13 as shipped against MMFS's patched wait.

A run holds the only slot of pool ``bench_pool`` (its step sleeps); a second run of an asset in the same
pool then waits. Over ``--seconds`` we read the waiting process's CPU time (utime + stime from /proc),
with plain Dagster and with ``mmfs_assets.instance.dagster_patches`` imported, for both executors a run
can have: in-process (``mmfs materialize``) and multiprocess (``dagster asset materialize``, and every run
the daemon launches). A waiting run should cost (almost) nothing: on a 2-core machine every spinning
waiter takes a core from real work.

Usage: python bench/pool_wait.py [--seconds 10]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.measured import expect_count  # noqa: E402

HOLDER = textwrap.dedent("""
    import sys, time
    import dagster as dg

    @dg.asset(pool="bench_pool")
    def hold() -> None:
        open(sys.argv[1], "w").write("holding")
        time.sleep(3600)

    dg.materialize([hold], instance=dg.DagsterInstance.get())
""")

WAITER = textwrap.dedent("""
    import sys
    if sys.argv[1] == "patched":
        from mmfs_assets.instance import dagster_patches  # noqa: F401
    import dagster as dg

    @dg.asset(pool="bench_pool")
    def waiter() -> None:
        pass

    dg.materialize([waiter], instance=dg.DagsterInstance.get())
""")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def blocked(pool_info) -> bool:
    return bool(pool_info.pending_steps) and any(p.assigned_timestamp is None for p in pool_info.pending_steps)


MP_WAITER = textwrap.dedent("""
    import os
    if os.environ.get("BENCH_PATCHED") == "1":
        from mmfs_assets.instance import dagster_patches  # noqa: F401
    import dagster as dg

    @dg.asset(pool="bench_pool")
    def waiter() -> None:
        pass

    defs = dg.Definitions(assets=[waiter])
""")


def measure(mode: str, executor: str, seconds: float, env: dict[str, str], tmp: Path) -> float:
    import dagster as dg

    if executor == "in-process":
        cmd = [sys.executable, "-c", WAITER, mode]
    else:  # the CLI runs the job with the multiprocess executor in this very process
        (tmp / "waiter_mp.py").write_text(MP_WAITER)
        cmd = [sys.executable, "-m", "dagster", "asset", "materialize", "-f", str(tmp / "waiter_mp.py"), "--select", "waiter"]
        env = {**env, "BENCH_PATCHED": "1" if mode == "patched" else "0"}
    p = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with dg.DagsterInstance.get() as inst:
            while not blocked(inst.event_log_storage.get_concurrency_info("bench_pool")):
                time.sleep(0.1)
        start = cpu_seconds(p.pid)
        time.sleep(seconds)
        used = cpu_seconds(p.pid) - start
        # what was measured is one run waiting the whole time: still running, still blocked
        with dg.DagsterInstance.get() as inst:
            still = p.poll() is None and blocked(inst.event_log_storage.get_concurrency_info("bench_pool"))
        expect_count(f"{mode} {executor} waiters still waiting after {seconds:g} s", int(still), 1)
        return used
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        with dg.DagsterInstance.get() as inst:  # the killed waiter's pending entry must not block the next
            for step in inst.event_log_storage.get_concurrency_info("bench_pool").pending_steps:
                if step.assigned_timestamp is None:
                    inst.event_log_storage.free_concurrency_slots_for_run(step.run_id)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mmfs-poolwait-"))
    home = tmp / "home"
    home.mkdir()
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    os.environ["DAGSTER_HOME"] = str(home)
    marker = tmp / "holding"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(marker)], cwd=ROOT, env=env,
                              start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not marker.exists():
            time.sleep(0.1)
        cpu = {(ex, mode): measure(mode, ex, args.seconds, env, tmp)
               for ex in ("in-process", "multiprocess") for mode in ("plain", "patched")}
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"CPU of a run waiting {args.seconds:g} s for a pool slot ({os.cpu_count()} CPUs here)")
    for ex in ("in-process", "multiprocess"):
        plain, patched = cpu[(ex, "plain")], cpu[(ex, "patched")]
        print(f"  {ex} executor")
        print(f"    dagster 1.13 as shipped   {plain:6.2f} CPU-s  ({plain / args.seconds:.0%} of a core)")
        print(f"    with MMFS's wait patch    {patched:6.2f} CPU-s  ({patched / args.seconds:.0%} of a core)")
        print(f"    ratio                     {plain / max(patched, 1e-3):.0f}x less CPU with the patch")


if __name__ == "__main__":
    main()
