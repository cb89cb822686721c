"""One fill per device on a node: an exclusive lock file per device, held while a model fills on it.

The run queue (pools at run granularity, ``dagster.yaml``) keeps two runs that use the ``gpu`` pool from
starting at once on one instance, but it cannot see everything that puts a model on this machine's
device: several feature steps of ONE run (pools do not limit steps within a run), a run ``mmfs
materialize`` executes in its own process, or another instance's runs on a shared node. So the local
engine takes ``flock`` on ``<MMFS_LOCK_DIR>/device-<device>.lock`` before it loads a model and holds it
until the fill ends. A GPU device (``cuda:0``) is one lock; a feature that uses a GPU but runs on the CPU
takes the ``cpu`` lock (one model at a time, as the ``gpu`` pool did). The kernel drops the lock when the
process dies, SIGKILL included: nothing is left to free. Waiting sleeps (no CPU), names the holder (it
writes its run, step and pid into the file) every :data:`NOTICE_EVERY_S`, and a Ctrl-C or a run
termination interrupts the sleep like any other Python code.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from mmfs_assets.lock_files import lock_file

LOCK_DIR_ENV = "MMFS_LOCK_DIR"
NOTICE_EVERY_S = 10.0
POLL_S = 0.5


def lock_dir() -> Path:
    """``MMFS_LOCK_DIR``, default a per-user folder in the system temp dir (node-local)."""
    raw = os.environ.get(LOCK_DIR_ENV)
    d = Path(raw) if raw else Path(tempfile.gettempdir()) / f"mmfs-locks-{os.getuid()}"
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    return d


def lock_name(device: str) -> str:
    """``cuda`` is ``cuda:0``; anything else keeps its name, made safe for a file name."""
    device = "cuda:0" if device == "cuda" else device
    return "device-" + re.sub(r"[^A-Za-z0-9_.-]", "_", device) + ".lock"


@contextlib.contextmanager
def device_lock(device: str, holder: str, notify: Callable[[str], None],
                directory: Path | None = None) -> Iterator[None]:
    """Hold ``device`` exclusively on this node (waiting, and saying for whom, while another process has it)."""
    path = (directory or lock_dir()) / lock_name(device)
    with lock_file(path, holder, lambda who: f"waiting for device {device}, held by {who}", notify,
                   poll_s=POLL_S, notice_every_s=NOTICE_EVERY_S):
        yield
