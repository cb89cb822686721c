"""CPU burnt by a run that waits for a pool: Dagster 1.13's step-level wait against MMFS's run-level wait.

A run uses the only slot of pool ``bench_pool`` (its step sleeps); a second run of an asset in the same
pool then waits. Over ``--seconds`` we read the waiting process's CPU time (utime + stime from /proc):

- Dagster 1.13 with pools at op granularity (its default): the second run's step waits for a slot inside
  the executor, in-process (``dagster.materialize``) and multiprocess (``dagster asset materialize``, and
  every run the daemon launches). Its claim check returns a zero wait, so the loop spins (docs/upstream.md).
- MMFS (``dagster.yaml``: pools at run granularity; ``mmfs materialize`` admits its run itself,
  ``mmfs_assets/instance/admission.py``): the second run waits before it exists, in a loop that sleeps.
  Runs the daemon launches wait in the run queue: no process at all until their pool is free.

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
    from mmfs_assets.instance.liveness import run_tags

    @dg.asset(pool="bench_pool")
    def hold() -> None:
        open(sys.argv[1], "w").write("holding")
        time.sleep(3600)

    dg.materialize([hold], instance=dg.DagsterInstance.get(), tags=run_tags())
""")

# Dagster as shipped: the step waits for a slot inside the in-process executor
OP_WAITER = textwrap.dedent("""
    import dagster as dg

    @dg.asset(pool="bench_pool")
    def waiter() -> None:
        pass

    dg.materialize([waiter], instance=dg.DagsterInstance.get())
""")

MP_WAITER = textwrap.dedent("""
    import dagster as dg

    @dg.asset(pool="bench_pool")
    def waiter() -> None:
        pass

    defs = dg.Definitions(assets=[waiter])
""")

# MMFS: what `mmfs materialize` does before its run exists
MMFS_WAITER = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    import dagster as dg
    from mmfs_assets.instance.admission import admitted

    @dg.asset(pool="bench_pool")
    def waiter() -> None:
        pass

    def said(message):
        Path(sys.argv[1]).write_text(message)

    inst = dg.DagsterInstance.get()
    with admitted(inst, Path(os.environ["DAGSTER_HOME"]), ["bench_pool"], said, "bench waiter"):
        dg.materialize([waiter], instance=inst)
""")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def make_home(tmp: Path, name: str, granularity: str) -> dict[str, str]:
    home = tmp / name
    home.mkdir()
    config = (ROOT / "dagster_home" / "dagster.yaml").read_text()
    if granularity == "op":  # Dagster's default
        config = config.replace("    granularity: run\n", "")
    assert ("granularity: run" in config) == (granularity == "run")
    (home / "dagster.yaml").write_text(config)
    return {**os.environ, "DAGSTER_HOME": str(home)}


def step_blocked(env: dict[str, str]) -> bool:
    """Dagster's step-level wait: a pending claim of ``bench_pool`` not assigned a slot."""
    import dagster as dg

    os.environ["DAGSTER_HOME"] = env["DAGSTER_HOME"]
    with dg.DagsterInstance.get() as inst:
        pending = inst.event_log_storage.get_concurrency_info("bench_pool").pending_steps
        return any(p.assigned_timestamp is None for p in pending)


def measure(contender: str, seconds: float, env: dict[str, str], tmp: Path) -> float:
    said = tmp / f"said-{contender}"
    if contender == "dagster in-process":
        cmd = [sys.executable, "-c", OP_WAITER]
    elif contender == "dagster multiprocess":
        (tmp / "waiter_mp.py").write_text(MP_WAITER)
        cmd = [sys.executable, "-m", "dagster", "asset", "materialize", "-f", str(tmp / "waiter_mp.py"), "--select", "waiter"]
    else:
        cmd = [sys.executable, "-c", MMFS_WAITER, str(said)]
    p = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)

    def waiting() -> bool:
        return said.exists() if contender == "mmfs materialize" else step_blocked(env)

    try:
        deadline = time.monotonic() + 120
        while not waiting():
            assert p.poll() is None and time.monotonic() < deadline, f"{contender}: the waiter never waited"
            time.sleep(0.1)
        start = cpu_seconds(p.pid)
        time.sleep(seconds)
        used = cpu_seconds(p.pid) - start
        # what was measured is one run waiting the whole time: still running, still waiting
        expect_count(f"{contender} waiters still waiting after {seconds:g} s", int(p.poll() is None and waiting()), 1)
        return used
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mmfs-poolwait-"))
    cpu: dict[str, float] = {}
    try:
        for granularity, contenders in (("op", ["dagster in-process", "dagster multiprocess"]),
                                        ("run", ["mmfs materialize"])):
            env = make_home(tmp, f"home-{granularity}", granularity)
            marker = tmp / f"holding-{granularity}"
            holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(marker)], cwd=ROOT, env=env,
                                      start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                while not marker.exists():
                    assert holder.poll() is None, "the holder died"
                    time.sleep(0.1)
                for c in contenders:
                    cpu[c] = measure(c, args.seconds, env, tmp)
            finally:
                os.killpg(holder.pid, signal.SIGKILL)
                holder.wait()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"CPU of a run waiting {args.seconds:g} s for a pool ({os.cpu_count()} CPUs here)")
    mmfs = cpu["mmfs materialize"]
    for c, used in cpu.items():
        ratio = "" if c == "mmfs materialize" else f"  {used / max(mmfs, 1e-3):.0f}x the CPU of MMFS's wait"
        print(f"  {c:<22} {used:6.2f} CPU-s ({used / args.seconds:.0%} of a core){ratio}")


if __name__ == "__main__":
    main()
