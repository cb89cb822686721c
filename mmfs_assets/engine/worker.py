"""A decode worker process: ``python -m mmfs_assets.engine.worker SOCKET_FD PARENT_PID TRACKER_FD``.

Started by :class:`mmfs_assets.engine.pool.WorkerPool`. It receives its setup (an initializer and its
arguments) as the first message on the socket, says ``ready``, then answers ``(task id, fn, args)``
messages with ``(task id, ok, value)`` (``ok``: True, False, or ``"infra"`` when the worker's setup failed) until it gets ``None``, its socket closes or its parent dies.
"""

from __future__ import annotations

import ctypes
import os
import queue
import signal
import sys
import threading
from multiprocessing import resource_tracker
from multiprocessing.connection import Connection

PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the getppid check in the loop still ends the worker
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(0)


def _read_tasks(conn: Connection, inbox: queue.Queue) -> None:
    """Receive tasks while the main thread runs one: the parent's send of a large task never waits on
    this worker's send of a large result (both blocked on full socket buffers: a deadlock)."""
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            msg = None
        inbox.put(msg)
        if msg is None:
            return


def serve(conn: Connection, parent: int) -> None:
    try:
        initializer, initargs = conn.recv()
    except (EOFError, OSError):
        os._exit(0)
    init_error = None
    if initializer is not None:
        try:
            initializer(*initargs)
        except BaseException as e:  # noqa: BLE001 - reported with every task, so a run says why
            init_error = f"worker setup failed: {type(e).__name__}: {e}"
    try:
        conn.send(("ready", None, None))  # task timeouts start now, not while the worker starts
    except (EOFError, OSError):
        os._exit(0)
    inbox: queue.Queue = queue.Queue()  # at most the pool's depth of tasks
    threading.Thread(target=_read_tasks, args=(conn, inbox), daemon=True).start()
    while True:
        try:
            msg = inbox.get(timeout=1.0)
        except queue.Empty:
            if os.getppid() != parent:
                os._exit(0)
            continue
        if msg is None:
            os._exit(0)
        tid, fn, args = msg
        if init_error is not None:  # the machinery failed, not the task: "infra" (retried by a later run)
            out: tuple = (tid, "infra", init_error)
        else:
            try:
                out = (tid, True, fn(*args))
            except BaseException as e:  # noqa: BLE001 - the task's failure is its row's error
                out = (tid, False, f"{type(e).__name__}: {e}")
        try:
            conn.send(out)
        except (EOFError, OSError):
            os._exit(0)
        except Exception as e:  # noqa: BLE001 - a result that cannot be pickled
            conn.send((tid, False, f"result not transferable: {type(e).__name__}: {e}"))


def main() -> None:
    fd, parent, tracker_fd = (int(x) for x in sys.argv[1:4])
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it closes the pool
    resource_tracker._resource_tracker._fd = tracker_fd  # type: ignore[attr-defined]  # the parent's tracker removes orphaned shared memory
    serve(Connection(fd), parent)


if __name__ == "__main__":
    main()
