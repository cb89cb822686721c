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
    pool, marker = sys.argv[1], sys.argv[2]

    @dg.asset(pool=pool)
    def hold() -> None:
        open(marker, "w").write("in the step")
        time.sleep(600)

    from mmfs_assets.instance.liveness import HOST_TAG, this_host
    dg.materialize([hold], instance=dg.DagsterInstance.get(), tags={HOST_TAG: this_host()})
""")


def _start_holder(pool: str, tmp_path: Path) -> tuple[subprocess.Popen, str]:
    """A run that holds a slot of ``pool`` (its step sleeps); returns the process and the run id."""
    marker = tmp_path / f"holder-{pool}"
    p = subprocess.Popen([sys.executable, "-c", HOLDER, pool, str(marker)], cwd=ROOT, start_new_session=True)
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert p.poll() is None and time.monotonic() < deadline, "the holder did not reach its step"
        time.sleep(0.1)
    with dg.DagsterInstance.get() as inst:
        info = inst.event_log_storage.get_concurrency_info(pool)
        assert len(info.claimed_slots) == 1
        return p, info.claimed_slots[0].run_id


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
def test_a_killed_run_frees_its_pool_slot(home, env, fixture_dir, tmp_path, pool, asset):
    """SIGKILL a run inside its step: the next run frees the slot, marks the dead run failed, runs."""
    make_drop(env, "k1", sorted((fixture_dir / "good").iterdir())[:2])
    if asset != "videos":
        assert _cli("materialize", "--partition", "k1", "--select", "videos", "--select", "video_metadata").returncode == 0
    holder, dead_run = _start_holder(pool, tmp_path)
    os.killpg(holder.pid, signal.SIGKILL)
    holder.wait()
    r = _cli("materialize", "--partition", "k1", "--select", asset)
    assert r.returncode == 0, r.stderr
    assert f"freed the '{pool}' pool slot of dead run {dead_run}" in r.stderr
    with dg.DagsterInstance.get() as inst:
        assert inst.get_run_by_id(dead_run).status == dg.DagsterRunStatus.FAILURE
        assert inst.event_log_storage.get_concurrency_info(pool).claimed_slots == []


def test_a_waiting_cli_says_what_it_waits_for_and_stops_on_ctrl_c(home, env, fixture_dir, tmp_path):
    make_drop(env, "w1", sorted((fixture_dir / "good").iterdir())[:1])
    holder, holder_run = _start_holder("lance_ingest", tmp_path)
    try:
        # As a terminal starts it: Ctrl-C delivered. A test run started in the background (`cmd &` in a
        # script) ignores SIGINT, and a child would inherit that and never see the Ctrl-C.
        p = subprocess.Popen([*CLI, "materialize", "--partition", "w1", "--select", "videos"], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        seen = ""
        while "to stop)" not in seen:
            line = p.stderr.readline()
            assert line, f"the CLI ended without saying it waits: {seen}"
            seen += line
        seen = " ".join(seen.split())
        assert f"run {holder_run}" in seen and "lance_ingest" in seen
        ignored = next(ln for ln in Path(f"/proc/{p.pid}/status").read_text().splitlines() if ln.startswith("SigIgn"))
        p.send_signal(signal.SIGINT)
        try:  # seconds normally; generous for a loaded CI machine
            _, err = p.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            p.kill()
            _, err = p.communicate()
            pytest.fail(f"the CLI did not stop within 120 s of SIGINT ({ignored}; SIGINT is bit 2); its stderr: {err[-3000:]}")
        assert p.returncode == 130 and "interrupted" in err
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()


BLOCKED = textwrap.dedent("""
    import sys
    import dagster as dg
    from mmfs_assets.instance import guard

    @dg.asset(pool="lance_ingest")
    def second() -> None:
        pass

    guard.wait_for_pools = lambda *a, **k: None  # as if another run took the slot right after the check
    guard.NOTICE_EVERY_S = 0.5
    inst = dg.DagsterInstance.get()
    try:
        guard.guarded_materialize([second], instance=inst, pools=["lance_ingest"],
                                  notify=lambda m: print(m, file=sys.stderr, flush=True))
    except KeyboardInterrupt:
        sys.exit(130)
""")


def test_a_run_blocked_inside_dagster_stops_on_sigterm_and_leaves_no_slot(home, tmp_path):
    holder, holder_run = _start_holder("lance_ingest", tmp_path)
    try:
        p = subprocess.Popen([sys.executable, "-c", BLOCKED], cwd=ROOT, stderr=subprocess.PIPE, text=True)
        seen = ""
        while "waits for a slot of pool 'lance_ingest'" not in seen:
            line = p.stderr.readline()
            assert line, f"the run ended without saying it waits: {seen}"
            seen += line
        assert f"held by run {holder_run}" in seen
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=30)
        assert p.returncode == 130
        with dg.DagsterInstance.get() as inst:
            info = inst.event_log_storage.get_concurrency_info("lance_ingest")
            assert {s.run_id for s in info.claimed_slots} == {holder_run}
            assert {s.run_id for s in info.pending_steps} <= {holder_run}
            mine = [r for r in inst.get_runs() if r.run_id != holder_run]
            assert [r.status for r in mine] == [dg.DagsterRunStatus.CANCELED]
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()


def test_the_reaper_sensor_frees_a_dead_cli_run(home, tmp_path):
    """What the daemon does every 30 s for runs it did not launch (a killed `mmfs materialize`)."""
    from mmfs_assets.definitions import defs
    from mmfs_assets.sensors import dead_run_reaper

    holder, dead_run = _start_holder("gpu", tmp_path)
    with dg.DagsterInstance.get() as inst:
        ctx = dg.build_sensor_context(instance=inst, definitions=defs)
        assert "no dead runs" in dead_run_reaper(ctx).skip_message  # alive: left alone
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()
        assert dead_run in dead_run_reaper(ctx).skip_message
        assert inst.get_run_by_id(dead_run).status == dg.DagsterRunStatus.FAILURE
        assert inst.event_log_storage.get_concurrency_info("gpu").claimed_slots == []


def test_dead_waiters_do_not_inherit_the_slot(home, env, fixture_dir, tmp_path):
    """A run killed while it waited leaves a pending entry that a freed slot would be handed to."""
    make_drop(env, "q1", sorted((fixture_dir / "good").iterdir())[:1])
    holder, holder_run = _start_holder("lance_ingest", tmp_path)
    waiter = subprocess.Popen([sys.executable, "-c", BLOCKED], cwd=ROOT, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)
    while "waits for a slot" not in (line := waiter.stderr.readline()):
        assert line, "the waiter ended before it waited"
    for p in (waiter, holder):  # both die: the holder inside its step, the waiter in the queue
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    r = _cli("materialize", "--partition", "q1", "--select", "videos")
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("pool slot of dead run") == 2 and holder_run in r.stderr
    with dg.DagsterInstance.get() as inst:
        info = inst.event_log_storage.get_concurrency_info("lance_ingest")
        assert info.claimed_slots == [] and info.pending_steps == []
        assert sorted(r.status.value for r in inst.get_runs()) == ["FAILURE", "FAILURE", "SUCCESS"]


def test_a_lost_wake_up_is_handed_the_free_slot(home):
    """Dagster's claim checks for a free slot, then enqueues: a slot freed in between wakes nobody."""
    from mmfs_assets.instance.home import open_instance
    from mmfs_assets.instance.liveness import wake_lost_claims

    with open_instance() as inst:
        st = inst.event_log_storage
        st.initialize_concurrency_limit_to_default("gpu")
        assert st.claim_concurrency_slot("gpu", "run-a", "s").slot_status.value == "CLAIMED"
        b_saw_free = st.has_unassigned_slots("gpu")  # B checks while A holds the slot...
        st.free_concurrency_slots_for_run("run-a")  # ...A frees it and finds nobody waiting...
        st.add_pending_step("gpu", "run-b", "s", should_assign=b_saw_free)  # ...then B enqueues
        assert st.claim_concurrency_slot("gpu", "run-b", "s").slot_status.value == "BLOCKED"
        wake_lost_claims(inst, ["gpu"])  # what the watchdog (every 0.5 s) and the reaper sensor do
        assert st.claim_concurrency_slot("gpu", "run-b", "s").slot_status.value == "CLAIMED"


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
