"""`make ui`: `dagster dev` on workspace.yaml, bound to 127.0.0.1, with DAGSTER_HOME made absolute.

``MMFS_UI_HOST``/``MMFS_UI_PORT`` change the address, ``MMFS_WORKSPACE`` the workspace file.

Started through this launcher, SIGINT/SIGTERM get their default handlers back: a `dagster dev` started
in the background of a shell otherwise ignores both and cannot be stopped cleanly.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    root = Path(__file__).resolve().parent.parent
    home = Path(os.environ.get("DAGSTER_HOME") or root / "dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home)
    from mmfs_assets.instance.home import InstanceError, init_home

    try:
        init_home(home)  # once, under the lock: the webserver, daemon and code server start at the same time
    except InstanceError as e:
        raise SystemExit(f"error: {e}") from e
    host = os.environ.get("MMFS_UI_HOST", "127.0.0.1")
    port = os.environ.get("MMFS_UI_PORT", "3000")
    dagster = shutil.which("dagster", path=str(Path(sys.executable).parent)) or shutil.which("dagster")
    if dagster is None:
        raise SystemExit("dagster is not installed: run `make ui` (it installs the pipeline extra)")
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.chdir(root)
    workspace = Path(os.environ.get("MMFS_WORKSPACE") or root / "workspace.yaml").resolve()
    os.execv(dagster, [dagster, "dev", "-w", str(workspace), "-h", host, "-p", port, *argv])


if __name__ == "__main__":
    main()
