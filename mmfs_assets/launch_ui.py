"""`make ui`: `dagster dev` on workspace.yaml, bound to 127.0.0.1, with DAGSTER_HOME made absolute.

``MMFS_UI_HOST``/``MMFS_UI_PORT`` change the address, ``MMFS_WORKSPACE`` the workspace file.

Ctrl-C (or SIGTERM) is a clean stop: `dagster dev` (Dagster's public ``dagster`` command, a child process in
this process group, so a terminal's Ctrl-C reaches both) shuts its webserver and daemon down, and the launcher
waits for it and exits 0, so `make ui` ends without make's ``Error 1`` even when a second Ctrl-C during the
shutdown makes `dagster dev` itself print ``Aborted!`` and exit 1. Other exit codes (a usage error: 2) pass through.
SIGINT and SIGTERM get handlers back first: a `dagster dev` started in the background of a shell otherwise
ignores both and cannot be stopped cleanly.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

#: how long a stopped launcher waits for `dagster dev` to end (it got the same signal)
CHILDREN_GRACE_S = 15.0


def dev_args(root: Path) -> list[str]:
    host = os.environ.get("MMFS_UI_HOST", "127.0.0.1")
    port = os.environ.get("MMFS_UI_PORT", "3000")
    workspace = Path(os.environ.get("MMFS_WORKSPACE") or root / "workspace.yaml").resolve()
    return ["dev", "-w", str(workspace), "-h", host, "-p", port]


def dagster_command() -> list[str]:
    dagster = shutil.which("dagster", path=str(Path(sys.executable).parent)) or shutil.which("dagster")
    if dagster is None:
        raise SystemExit("error: dagster is not installed: run `make ui` (it installs the pipeline extra)")
    return [dagster]


def run_dagster(args: list[str], command: list[str] | None = None) -> int:
    """``dagster *args`` in a child process; its exit code, or 0 when the user stopped it (Ctrl-C, SIGTERM)."""
    proc = subprocess.Popen([*(command or dagster_command()), *args])
    try:
        return proc.wait()
    except KeyboardInterrupt:
        return stopped(proc)


def stopped(proc: subprocess.Popen | None = None) -> int:
    """After an interrupt: wait for `dagster dev` (it got the signal too and shuts its services down), at most
    ``CHILDREN_GRACE_S``, then stop it; exit code 0."""
    if proc is not None:
        deadline = time.monotonic() + CHILDREN_GRACE_S
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except KeyboardInterrupt:
                pass  # one more Ctrl-C: dagster dev has it too; keep waiting for it
            except subprocess.TimeoutExpired:
                break
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
    print("mmfs ui: stopped", file=sys.stderr)
    return 0


def _terminated(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM stops like Ctrl-C (a SIGTERM to the group reached dagster dev too)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    root = Path(__file__).resolve().parent.parent
    home = Path(os.environ.get("DAGSTER_HOME") or root / "dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _terminated)
    try:
        from mmfs_assets.instance.home import InstanceError, init_home

        try:
            init_home(home)  # once, under the lock: the webserver, daemon and code server start at the same time
        except InstanceError as e:
            raise SystemExit(f"error: {e}") from e
        os.chdir(root)
        code = run_dagster([*dev_args(root), *argv])
    except KeyboardInterrupt:  # Ctrl-C before dagster dev started
        code = stopped()
    raise SystemExit(code)


if __name__ == "__main__":
    main()
