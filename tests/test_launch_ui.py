"""`make ui`'s launcher: Ctrl-C is a clean stop (exit 0), never Click's ``Aborted!`` with exit code 1, which made
make print ``make: *** [Makefile:35: ui] Error 1``.

A first Ctrl-C was always handled by `dagster dev` itself; one during its start-up, or a second one while it
shut down (its services take seconds), escaped as ``KeyboardInterrupt`` into Click, which printed ``Aborted!``
and exited 1.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from mmfs_assets import launch_ui
from tests.dagster_server import ROOT, free_port


def _child(code: str) -> list[str]:
    """A stand-in for the ``dagster`` command: a Python child running ``code``."""
    return [sys.executable, "-c", code]


def test_an_interrupt_is_a_clean_stop(monkeypatch, capsys) -> None:
    """Ctrl-C reaches the launcher and `dagster dev` (one process group); `dagster dev` ends with Click's
    ``Aborted!`` and exit code 1 (a second Ctrl-C during its shutdown): the launcher still exits 0."""
    monkeypatch.setattr(launch_ui, "CHILDREN_GRACE_S", 10.0)
    child = _child("import os, signal, sys, time\n"
                   "os.kill(os.getppid(), signal.SIGINT)\n"
                   "time.sleep(0.5)\n"
                   "print('Aborted!', file=sys.stderr)\n"
                   "raise SystemExit(1)")
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        assert launch_ui.run_dagster(["dev"], command=child) == 0
    finally:
        signal.signal(signal.SIGINT, previous)
    assert "mmfs ui: stopped" in capsys.readouterr().err


def test_usage_errors_keep_their_exit_code() -> None:
    assert launch_ui.run_dagster(["dev", "--nope"], command=_child("raise SystemExit(2)")) == 2
    assert launch_ui.run_dagster([], command=_child("pass")) == 0


def test_ctrl_c_before_dagster_dev_started(monkeypatch, tmp_path) -> None:
    from mmfs_assets.instance import home

    def interrupted(_home) -> None:
        raise KeyboardInterrupt

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    monkeypatch.setattr(home, "init_home", interrupted)
    monkeypatch.setattr(launch_ui, "CHILDREN_GRACE_S", 0.5)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with pytest.raises(SystemExit) as e:
            launch_ui.main([])
    finally:  # main() sets this process's handlers, as the launcher's own process should
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    assert e.value.code == 0


@pytest.mark.slow
def test_ctrl_c_twice_stops_dagster_dev_with_exit_code_0(tmp_path) -> None:
    """The real launcher and `dagster dev` on a one-asset workspace: two Ctrl-C (SIGINT to the process group,
    as a terminal sends it) once the webserver answers."""
    (tmp_path / "defs.py").write_text("import dagster as dg\n\n@dg.asset\ndef a() -> None:\n    pass\n\n"
                                      "defs = dg.Definitions(assets=[a])\n")
    (tmp_path / "workspace.yaml").write_text(f"load_from:\n  - python_file:\n      relative_path: defs.py\n"
                                             f"      working_directory: {tmp_path}\n")
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", home)
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home), "MMFS_UI_PORT": str(port), "MMFS_WORKSPACE": str(tmp_path / "workspace.yaml"),
           "MMFS_TABLE_URI": str(tmp_path / "t.lance"), "MMFS_DROP_DIR": str(tmp_path / "drops")}
    p = subprocess.Popen([sys.executable, "-m", "mmfs_assets.launch_ui"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and p.poll() is None:
            try:
                requests.get(f"http://127.0.0.1:{port}/server_info", timeout=2)
                break
            except requests.RequestException:
                time.sleep(0.3)
        assert p.poll() is None, p.communicate()[0].decode()[-3000:]
        os.killpg(p.pid, signal.SIGINT)
        time.sleep(0.3)  # the second Ctrl-C lands while dagster dev shuts its services down
        os.killpg(p.pid, signal.SIGINT)
        out = p.communicate(timeout=90)[0].decode()
    finally:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert p.returncode == 0, out[-3000:]
    assert "mmfs ui: stopped" in out or "Dagster services shut down" in out, out[-3000:]


def test_make_ui_runs_the_launcher() -> None:
    recipe = Path(ROOT / "Makefile").read_text().split("\nui:", 1)[1].split("\n\n", 1)[0]
    assert "mmfs_assets.launch_ui" in recipe
