"""The Dagster instance: concurrent first use, damaged homes, dead runs holding pool slots, Ctrl-C.

Every process here is a real `mmfs` CLI or a real `dagster.materialize` in its own process, on a home
with the project's own dagster.yaml (pools of one slot). Kill points are chosen by state, not by time:
a slot holder is killed once its step has started (it writes a marker from inside the step).
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dagster as dg
import pytest

from mmfs_assets.instance.home import STORAGE_DBS, damage
from tests.conftest import make_drop

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "mmfs_assets.cli.app"]


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", h / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(h))
    return h


def _cli(*args, **kw) -> subprocess.CompletedProcess:
    """The CLI in its own process; its output with rich's line wrapping undone."""
    r = subprocess.run([*CLI, *args], cwd=ROOT, capture_output=True, text=True, timeout=300, **kw)
    r.stdout, r.stderr = " ".join(r.stdout.split()), " ".join(r.stderr.split())
    return r


HOLDER = textwrap.dedent("""
    import sys, time
    import dagster as dg
    from mmfs_assets.instance.liveness import run_tags
    pool, marker = sys.argv[1], sys.argv[2]

    @dg.asset(pool=pool)
    def hold() -> None:
        open(marker, "w").write("in the step")
        time.sleep(600)

    # a run as `mmfs materialize` makes it: in its own process, tagged with its host and pid
    dg.materialize([hold], instance=dg.DagsterInstance.get(), tags=run_tags())
""")


def _start_holder(pool: str, tmp_path: Path) -> tuple[subprocess.Popen, str]:
    """A run that uses ``pool`` (its step sleeps); returns the process and the run id."""
    marker = tmp_path / f"holder-{pool}"
    p = subprocess.Popen([sys.executable, "-c", HOLDER, pool, str(marker)], cwd=ROOT, start_new_session=True)
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert p.poll() is None and time.monotonic() < deadline, "the holder did not reach its step"
        time.sleep(0.1)
    with dg.DagsterInstance.get() as inst:
        (run,) = [r for r in inst.get_runs() if r.status == dg.DagsterRunStatus.STARTED]
        assert pool in run.run_op_concurrency.all_pools  # what the run queue counts it as holding
        return p, run.run_id


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_concurrent_first_use_of_a_fresh_home(home, env, fixture_dir, tmp_path):
    """Four `mmfs materialize` start together on a new home: all succeed, the home stays healthy."""
    good = sorted((fixture_dir / "good").iterdir())
    for i in range(4):
        make_drop(env, f"c{i}", [good[i]])
    barrier = tmp_path / "go"
    code = textwrap.dedent(f"""
        import os, sys, time
        while not os.path.exists({str(barrier)!r}):
            time.sleep(0.005)
        from mmfs_assets.cli.app import main
        sys.argv = ["mmfs", "materialize", "--partition", sys.argv[1], "--select", "videos"]
        main()
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code, f"c{i}"], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(4)]
    time.sleep(1.0)
    barrier.touch()  # all four import Dagster and open the fresh home at the same moment
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], "\n".join(outs)
    assert damage(home) == {}
    with dg.DagsterInstance.get() as inst:
        assert sorted(r.status.value for r in inst.get_runs()) == ["SUCCESS"] * 4
    assert _cli("materialize", "--partition", "c0", "--select", "videos").returncode == 0


def test_a_damaged_home_gets_a_clear_message_and_a_repair(home, env, fixture_dir):
    make_drop(env, "r1", sorted((fixture_dir / "good").iterdir())[:1])
    assert _cli("home", "check").returncode == 0
    con = sqlite3.connect(home / STORAGE_DBS[0])  # what a first-use race leaves: two schema stamps
    with con:
        con.execute("INSERT INTO alembic_version (version_num) VALUES ('0000deadbeef')")
    con.close()
    r = _cli("materialize", "--partition", "r1", "--select", "videos")  # a failure (1), not a bad request (2)
    assert r.returncode == 1 and "is damaged" in r.stderr and "mmfs home repair" in r.stderr
    assert "Traceback" not in r.stderr
    r = _cli("home", "check")
    assert r.returncode == 1 and "is damaged" in r.stderr
    r = _cli("home", "repair")
    assert r.returncode == 0 and "2 schema stamps -> 1" in r.stdout, r.stderr
    assert damage(home) == {}
    assert _cli("materialize", "--partition", "r1", "--select", "videos").returncode == 0


def test_unset_dagster_home_is_refused_unless_ephemeral(env, fixture_dir, monkeypatch):
    make_drop(env, "e1", sorted((fixture_dir / "good").iterdir())[:1])
    for value in ("", "relative/home"):
        r = _cli("materialize", "--partition", "e1", "--select", "videos", env={**os.environ, "DAGSTER_HOME": value})
        assert r.returncode == 2 and "DAGSTER_HOME" in r.stderr
    r = _cli("materialize", "--partition", "e1", "--select", "videos", "--ephemeral",
             env={k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"})
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("pool,asset", [("lance_ingest", "videos"), ("gpu", "clip_embedding")])
def test_a_killed_run_does_not_block_the_next(home, env, fixture_dir, tmp_path, pool, asset):
    """SIGKILL a run inside its step: the next run marks it failed (its pools are free again) and runs."""
    make_drop(env, "k1", sorted((fixture_dir / "good").iterdir())[:2])
    if asset != "videos":
        assert _cli("materialize", "--partition", "k1", "--select", "videos", "--select", "video_metadata").returncode == 0
    holder, dead_run = _start_holder(pool, tmp_path)
    os.killpg(holder.pid, signal.SIGKILL)
    holder.wait()
    r = _cli("materialize", "--partition", "k1", "--select", asset)
    assert r.returncode == 0, r.stderr
    assert f"marked dead run {dead_run} failed" in r.stderr
    with dg.DagsterInstance.get() as inst:
        assert inst.get_run_by_id(dead_run).status == dg.DagsterRunStatus.FAILURE


def _waiting_cli(partition: str, asset: str, until: str) -> tuple[subprocess.Popen, str]:
    """``mmfs materialize`` started as a terminal starts it (Ctrl-C delivered: a test run in the background
    ignores SIGINT, and a child would inherit that), read until its stderr says ``until``."""
    p = subprocess.Popen([*CLI, "materialize", "--partition", partition, "--select", asset], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = ""
    while until not in " ".join(seen.split()):
        line = p.stderr.readline()
        assert line, f"the CLI ended without saying {until!r}: {seen}"
        seen += line
    return p, " ".join(seen.split())


def _stop(p: subprocess.Popen, sig: int) -> str:
    p.send_signal(sig)
    try:  # seconds normally; generous for a loaded CI machine
        _, err = p.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        p.kill()
        _, err = p.communicate()
        pytest.fail(f"the CLI did not stop within 120 s of signal {sig}; its stderr: {err[-3000:]}")
    return " ".join(err.split())


def test_a_waiting_cli_says_what_it_waits_for_costs_no_cpu_and_stops_on_ctrl_c(home, env, fixture_dir, tmp_path):
    make_drop(env, "w1", sorted((fixture_dir / "good").iterdir())[:1])
    holder, holder_run = _start_holder("lance_ingest", tmp_path)
    try:
        p, seen = _waiting_cli("w1", "videos", "to stop)")
        assert f"waiting for pool 'lance_ingest', held by run {holder_run}" in seen
        cpu, t = _cpu_seconds(p.pid), time.monotonic()
        time.sleep(3)
        assert _cpu_seconds(p.pid) - cpu < 0.25 * (time.monotonic() - t)  # it sleeps: no spinning wait
        err = _stop(p, signal.SIGINT)
        assert p.returncode == 130 and "interrupted" in err and "nothing was claimed" in err
        with dg.DagsterInstance.get() as inst:
            assert [r.run_id for r in inst.get_runs()] == [holder_run]  # the waiter created no run
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_run_waiting_for_its_device_stops_on_a_signal_and_leaves_nothing(home, env, fixture_dir, tmp_path,
                                                                             monkeypatch, sig):
    """A step waiting for the device (another process fills on it) says for whom, and Ctrl-C or SIGTERM
    stop the run: exit 130, the run failed, and the device is free for the next run."""
    import fcntl

    monkeypatch.setenv("MMFS_LOCK_DIR", str(tmp_path / "locks"))
    (tmp_path / "locks").mkdir()
    make_drop(env, "g1", sorted((fixture_dir / "good").iterdir())[:1])
    assert _cli("materialize", "--partition", "g1", "--select", "videos", "--select", "video_metadata").returncode == 0
    fd = os.open(tmp_path / "locks" / "device-cpu.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.pwrite(fd, b"the test's own fill", 0)
    try:
        p, seen = _waiting_cli("g1", "clip_embedding", "waiting for device cpu")
        err = _stop(p, sig)
        assert "held by the test's own fill" in seen + err
        assert p.returncode == 130 and "interrupted" in err, err
    finally:
        os.close(fd)
    with dg.DagsterInstance.get() as inst:
        assert inst.get_runs(limit=1)[0].status == dg.DagsterRunStatus.FAILURE
    r = _cli("materialize", "--partition", "g1", "--select", "clip_embedding")  # the device is free: it runs
    assert r.returncode == 0 and "waiting for" not in r.stderr, r.stderr


def test_the_reaper_sensor_frees_a_dead_cli_run(home, tmp_path):
    """What the daemon does every 30 s for runs it did not launch (a killed `mmfs materialize`)."""
    from mmfs_assets.definitions import defs
    from mmfs_assets.defs.operations.reaper import dead_run_reaper

    holder, dead_run = _start_holder("gpu", tmp_path)
    with dg.DagsterInstance.get() as inst:
        ctx = dg.build_sensor_context(instance=inst, definitions=defs)
        assert "no dead runs" in dead_run_reaper(ctx).skip_message  # alive: left alone
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()
        assert dead_run in dead_run_reaper(ctx).skip_message
        assert inst.get_run_by_id(dead_run).status == dg.DagsterRunStatus.FAILURE


def test_a_killed_waiter_leaves_nothing_behind(home, env, fixture_dir, tmp_path):
    """A CLI killed while it waited, and the run it waited for killed in its step: the next CLI runs at once
    (the waiter created no run and its pool lock died with it; the dead run is marked failed)."""
    make_drop(env, "q1", sorted((fixture_dir / "good").iterdir())[:1])
    holder, holder_run = _start_holder("lance_ingest", tmp_path)
    waiter, _ = _waiting_cli("q1", "videos", "to stop)")
    waiter.kill()
    waiter.wait()
    os.killpg(holder.pid, signal.SIGKILL)
    holder.wait()
    r = _cli("materialize", "--partition", "q1", "--select", "videos")
    assert r.returncode == 0, r.stderr
    assert f"marked dead run {holder_run} failed" in r.stderr and "waiting for" not in r.stderr
    with dg.DagsterInstance.get() as inst:
        assert sorted(r.status.value for r in inst.get_runs()) == ["FAILURE", "SUCCESS"]


def test_two_clis_take_turns_on_a_pool(home, env, fixture_dir):
    """A second `mmfs materialize` of a pool waits on the first one's lock, saying whose, then runs."""
    from mmfs_assets.instance.admission import pool_locks

    make_drop(env, "t1", sorted((fixture_dir / "good").iterdir())[:1])
    with pool_locks(home, ["lance_ingest"], lambda m: None, "mmfs materialize t0"):
        p, seen = _waiting_cli("t1", "videos", "to stop)")
        assert "waiting for pool 'lance_ingest', held by mmfs materialize t0" in seen
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err


def test_importing_mmfs_changes_no_dagster_class():
    """Importing MMFS (its definitions, CLI and engine) has no process-wide side effect on Dagster: every
    attribute of every Dagster class loaded before the import is the same object after it."""
    code = textwrap.dedent("""
        import importlib, inspect, pkgutil, sys
        import dagster
        for m in ("dagster._core.execution.plan.active", "dagster._core.execution.plan.instance_concurrency_context",
                  "dagster._core.executor.multiprocess", "dagster._utils.interrupts"):
            importlib.import_module(m)  # the modules earlier MMFS versions patched, loaded before MMFS

        def snapshot():
            out = {}
            for name, mod in list(sys.modules.items()):
                if not name.startswith("dagster") or mod is None:
                    continue
                for cname, obj in list(vars(mod).items()):
                    if inspect.isclass(obj) and obj.__module__ == name:
                        out.update({(name, cname, k): v for k, v in vars(obj).items()})
                    elif inspect.isfunction(obj) and obj.__module__ == name:
                        out[(name, cname)] = obj.__code__
            return out

        def patched(old, new):
            # Dagster's @record classes hold a placeholder that compiles their own __new__ on first use
            if new is old or type(old).__module__.startswith("dagster_shared"):
                return False
            fn = getattr(new, "__func__", new)
            return not (getattr(fn, "__module__", None) or "").startswith("dagster")

        before = snapshot()
        import mmfs_assets.definitions, mmfs_assets.cli.app, mmfs_assets.cli.run, mmfs_assets.engine.fill  # noqa
        after = snapshot()
        changed = sorted(str(k) for k, v in before.items() if patched(v, after.get(k)))
        print(len(before), changed[:10])
        sys.exit(1 if changed else 0)
    """)
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert int(r.stdout.split()[0]) > 1000  # it looked at Dagster's classes, not at nothing


def test_an_old_schema_stamp_is_migrated_on_first_use(home):
    """The quieter outcome of the first-use race: one stamp, an older revision. Init migrates it."""
    from mmfs_assets.instance.home import _head, _stamps

    assert _cli("home", "check").returncode == 0
    con = sqlite3.connect(home / STORAGE_DBS[0])
    with con:
        con.execute("UPDATE alembic_version SET version_num = '5771160a95ad'")
    con.close()
    r = _cli("home", "check")
    assert r.returncode == 0 and "healthy" in r.stdout, r.stderr
    assert _stamps(home / STORAGE_DBS[0]) == [_head()]
