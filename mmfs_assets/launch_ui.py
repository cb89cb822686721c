"""`make ui`: `dagster dev` on workspace.yaml, bound to 127.0.0.1, with DAGSTER_HOME made absolute.

``MMFS_UI_HOST``/``MMFS_UI_PORT`` change the address, ``MMFS_WORKSPACE`` the workspace file.

Ctrl-C (or SIGTERM) is a clean stop: `dagster dev` shuts its webserver and daemon down and the launcher exits
0, so `make ui` ends without ``Aborted!`` or make's ``Error 1``. `dagster dev` runs in this process (Dagster's
own CLI, called with Click's ``standalone_mode=False``): an interrupt that reaches it while it is still starting,
or a second Ctrl-C while it shuts down, ends here as a stop rather than as Click's ``Aborted!`` and exit code 1.
SIGINT and SIGTERM get their usual handlers back first: a `dagster dev` started in the background of a shell
otherwise ignores both and cannot be stopped cleanly.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

#: how long a stopped launcher waits for the webserver and daemon processes to end (they got the same signal)
CHILDREN_GRACE_S = 15.0


def dev_args(root: Path) -> list[str]:
    host = os.environ.get("MMFS_UI_HOST", "127.0.0.1")
    port = os.environ.get("MMFS_UI_PORT", "3000")
    workspace = Path(os.environ.get("MMFS_WORKSPACE") or root / "workspace.yaml").resolve()
    return ["dev", "-w", str(workspace), "-h", host, "-p", port]


def run_dagster(args: list[str]) -> int:
    """Dagster's CLI with ``args`` in this process; its exit code, 0 when it was stopped by Ctrl-C or SIGTERM."""
    import click

    try:
        from dagster._cli import ENV_PREFIX, cli
    except ImportError as e:
        raise SystemExit("error: dagster is not installed: run `make ui` (it installs the pipeline extra)") from e
    try:
        cli.main(args=args, prog_name="dagster", auto_envvar_prefix=ENV_PREFIX, standalone_mode=False)
    except (KeyboardInterrupt, click.exceptions.Abort):
        return stopped()
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.ClickException as e:
        e.show()
        return e.exit_code
    return 0


def stopped() -> int:
    """After an interrupt: wait (briefly) for the child processes, which got the signal too; exit code 0."""
    deadline = time.monotonic() + CHILDREN_GRACE_S
    try:
        while time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break  # none left
            if pid == 0:
                time.sleep(0.1)
    except KeyboardInterrupt:
        pass  # one more Ctrl-C: stop waiting
    print("mmfs ui: stopped", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    root = Path(__file__).resolve().parent.parent
    home = Path(os.environ.get("DAGSTER_HOME") or root / "dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # dagster dev maps it to the SIGINT handler
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
