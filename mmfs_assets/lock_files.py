"""An exclusive lock file that says who holds it: what the device locks and the CLI's pool locks share.

``flock`` on the file; the kernel drops it when the process dies (SIGKILL included), so nothing is ever
left to free. The holder writes a line about itself into the file, so a waiter can say for whom it waits.
Waiting sleeps (no CPU), repeats its message every ``notice_every_s`` and is interrupted by Ctrl-C or
SIGTERM like any Python loop.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path


def holder_of(path: Path) -> str:
    """The line the lock's holder wrote about itself."""
    try:
        return path.read_text().strip() or "another process"
    except OSError:
        return "another process"


@contextlib.contextmanager
def lock_file(path: Path, holder: str, waiting: Callable[[str], str], notify: Callable[[str], None], *,
              mode: int = 0o600, poll_s: float = 0.5, notice_every_s: float = 10.0) -> Iterator[None]:
    """Hold ``path`` exclusively; while another process holds it, ``notify(waiting(<its holder line>))``."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, mode)  # not inherited by spawned processes (PEP 446)
    try:
        last = -notice_every_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() - last >= notice_every_s:
                    notify(waiting(holder_of(path)))
                    last = time.monotonic()
                time.sleep(poll_s)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{holder} (pid {os.getpid()})".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock
