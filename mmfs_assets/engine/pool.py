"""A pool of spawned worker processes that outlives the tasks that break it.

The fill engine decodes (and probes, and PNG-encodes) in these processes so the process that runs the
model keeps one core for feeding the accelerator, and decoding scales past the GIL. Unlike a
``multiprocessing.Pool`` or a ``DataLoader``, a task here may kill its worker: a decoder that segfaults,
hangs past ``timeout`` or is killed from outside makes only that task fail (``TaskFailed``); the worker
is replaced and the tasks queued behind it are sent elsewhere. A task whose worker died runs once more on
a fresh worker first (a kill from outside is not the task's fault), and failures of the machinery itself (a
worker that cannot start or set up) are marked ``infra`` so the row is retried later, not recorded. Each worker has its own pipe (a worker
killed mid-write cannot leave a shared queue's lock held) and a small queue of tasks (``depth``), so
the pool always knows which task a dead worker was running: the oldest one it had not answered.

Results travel pickled through the worker's pipe; large arrays (decoded frames) go through shared
memory instead (:mod:`mmfs_assets.engine.shm`).

Workers are fresh interpreters (``python -m mmfs_assets.engine.worker``, :mod:`.worker`): no forked
copy of a threaded parent, and unlike ``multiprocessing``'s spawn they do not re-import the parent's
main module (a script that imports torch would cost each worker seconds). They get their setup
(initializer and arguments, which may hold storage credentials) through their socket, never argv or
the environment.

No orphans: workers get ``SIGKILL`` when the parent dies (``PR_SET_PDEATHSIG``), also exit when their
parent id changes, and :meth:`WorkerPool.close` kills whatever is left.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing import resource_tracker
from multiprocessing.connection import Connection, wait
from typing import Any

STARTUP_TIMEOUT_S = 300.0  # starting, importing lance/av and opening the table (a slow object store)


@dataclass(frozen=True)
class TaskFailed:
    """A task's failure, as a value: the row it was for gets ``message`` as its error.

    ``infra``: the failure is the machinery's, not the row's (a worker that could not set up or start):
    the row must not be recorded as failed, a later run retries it."""

    message: str
    infra: bool = False


#: A task whose worker crashed under it (a signal of its own: SIGSEGV, SIGABRT, ...) runs once more on a fresh
#: worker before the crash counts as the row's: a decoder that crashes on the same video twice is the video's.
DEATH_RETRIES = 1
#: A worker killed with SIGKILL was killed from outside (an operator, the OOM killer, a container limit): that
#: says nothing about the video. Its task runs again up to this many times, then is an ``infra`` failure (the
#: row is left for a later run), never the row's error.
KILL_RETRIES = 2


def _reap(proc: subprocess.Popen) -> int | None:
    """Wait (briefly) for a dead or killed worker; its return code (negative: the signal)."""
    try:
        return proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


@dataclass
class _Task:
    tid: int
    fn: Callable[..., Any]
    args: tuple
    timeout: float | None
    deaths: int = 0  # workers that died while running this task


@dataclass
class _Worker:
    proc: Any
    conn: Connection
    queue: deque[_Task] = field(default_factory=deque)
    head_since: float = 0.0  # when the oldest queued task started (as far as the parent can tell)
    started: float = field(default_factory=time.monotonic)
    ready: bool = False  # set up (imports, initializer) and answering


class WorkerPool:
    """``workers`` spawned processes running ``fn(*args)`` tasks; see the module docstring.

    ``initializer(*initargs)`` runs once in each worker (open the table, load nothing heavy).
    ``timeout``: default seconds a task may run before its worker is killed (None: no limit).
    """

    def __init__(
        self,
        workers: int,
        *,
        initializer: Callable[..., None] | None = None,
        initargs: tuple = (),
        timeout: float | None = None,
        depth: int = 2,
        name: str = "mmfs-worker",
    ) -> None:
        if workers < 1:
            raise ValueError(f"a worker pool needs at least one worker, not {workers}")
        self._init = (initializer, initargs)
        self._timeout = timeout
        self._depth = max(1, depth)
        self._name = name
        self._ids = itertools.count()
        self._pending: deque[_Task] = deque()
        self._done: dict[int, Any] = {}
        self._workers: list[_Worker] = []
        self.restarts = 0
        for _ in range(workers):
            self._workers.append(self._start())

    @property
    def timeout(self) -> float | None:
        """The default seconds a task may run."""
        return self._timeout

    @property
    def size(self) -> int:
        return len(self._workers)

    def pids(self) -> list[int]:
        return [w.proc.pid for w in self._workers]

    def _start(self) -> _Worker:
        ours, theirs = socket.socketpair()
        resource_tracker.ensure_running()  # shared with the workers, like multiprocessing's spawn does
        tracker_fd = resource_tracker._resource_tracker._fd  # type: ignore[attr-defined]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p), "MMFS_WORKER_NAME": self._name}
        proc = subprocess.Popen(
            [sys.executable, "-m", "mmfs_assets.engine.worker", str(theirs.fileno()), str(os.getpid()), str(tracker_fd)],
            pass_fds=(theirs.fileno(), tracker_fd), env=env, stdin=subprocess.DEVNULL, close_fds=True,
        )
        theirs.close()
        conn = Connection(os.dup(ours.fileno()))
        ours.close()
        w = _Worker(proc, conn)
        try:
            conn.send(self._init)
        except (BrokenPipeError, OSError):
            pass  # found dead by the next poll
        return w

    def submit(self, fn: Callable[..., Any], *args: Any, timeout: float | None = None) -> int:
        """Queue ``fn(*args)`` (``fn`` must be importable by name); returns the task id."""
        t = _Task(next(self._ids), fn, args, timeout if timeout is not None else self._timeout)
        self._pending.append(t)
        self._dispatch()
        return t.tid

    @property
    def outstanding(self) -> int:
        return len(self._pending) + sum(len(w.queue) for w in self._workers)

    def _dispatch(self) -> None:
        for w in sorted(self._workers, key=lambda w: len(w.queue)):
            while self._pending and len(w.queue) < self._depth:
                t = self._pending.popleft()
                try:
                    w.conn.send((t.tid, t.fn, t.args))
                except (BrokenPipeError, OSError):
                    self._pending.appendleft(t)
                    break  # found dead by the next poll
                if not w.queue and w.ready:
                    w.head_since = time.monotonic()
                w.queue.append(t)

    def _finish(self, tid: int, value: Any) -> None:
        self._done[tid] = value

    def _replace(self, w: _Worker, reason: str, *, died: bool = False, infra: bool = False) -> None:
        """``w``'s oldest task failed with ``reason``; the rest are queued again; a new worker takes its place.

        ``died``: the worker died under the task (retried, see ``DEATH_RETRIES`` and ``KILL_RETRIES``);
        ``infra``: the failure is not the task's (the worker never started)."""
        if w.proc.poll() is None:
            w.proc.kill()
        _reap(w.proc)
        w.conn.close()
        if w.queue:
            head = w.queue.popleft()
            killed = died and w.proc.returncode == -signal.SIGKILL
            if died and head.deaths < (KILL_RETRIES if killed else DEATH_RETRIES):  # again, ahead of the others
                head.deaths += 1
                w.queue.appendleft(head)
            elif killed:
                self._finish(head.tid, TaskFailed(f"{reason} on {head.deaths + 1} workers (killed from outside: "
                                                  "out of memory, or an operator)", infra=True))
            elif died and head.deaths:
                self._finish(head.tid, TaskFailed(f"{reason} (twice, on two workers)"))
            else:
                self._finish(head.tid, TaskFailed(reason, infra=infra))
            self._pending.extendleft(reversed(w.queue))
        self._workers[self._workers.index(w)] = self._start()
        self.restarts += 1

    def _receive(self, w: _Worker) -> bool:
        """Read one answer from ``w``; False when its pipe is broken (the worker died)."""
        try:
            tid, ok, value = w.conn.recv()
        except (EOFError, OSError, ConnectionResetError):
            return False
        except Exception as e:  # noqa: BLE001 - an answer that cannot be unpickled (its sender died)
            tid, ok, value = (w.queue[0].tid if w.queue else -1), False, f"result lost: {type(e).__name__}: {e}"
        if tid == "ready":
            w.ready = True
            w.head_since = time.monotonic()
            return True
        if w.queue and w.queue[0].tid == tid:
            w.queue.popleft()
            w.head_since = time.monotonic()
        self._finish(tid, value if ok is True else TaskFailed(value, infra=ok == "infra"))
        return True

    def poll(self, timeout: float = 0.05) -> None:
        """Collect answers for up to ``timeout`` seconds; replace dead or overdue workers."""
        busy = [w for w in self._workers if w.queue or not w.ready]
        if busy:
            ready = wait([w.conn for w in busy], timeout)  # a dead worker's socket reads as EOF
            for w in busy:
                broken = False
                if w.conn in ready:
                    try:
                        while w.conn.poll():
                            if not self._receive(w):
                                broken = True
                                break
                    except (EOFError, OSError):
                        broken = True
                if broken or w.proc.poll() is not None:
                    code = _reap(w.proc)
                    how = f"signal {-code} ({signal.Signals(-code).name})" if code and code < 0 else f"exit code {code}"
                    if w.ready:
                        self._replace(w, f"decoder process died: {how}", died=True)
                    else:  # it never set up: nothing to do with the task it was given
                        self._replace(w, f"decoder process died while starting: {how}", infra=True)
        for w in list(self._workers):  # an idle worker that died (killed from outside): no task lost, replace it
            if w.ready and not w.queue and w.proc.poll() is not None:
                self._replace(w, "idle decoder process died")
        now = time.monotonic()
        for w in list(self._workers):
            if not w.ready:
                if w.queue and now - w.started > STARTUP_TIMEOUT_S:
                    self._replace(w, f"decoder process did not start within {STARTUP_TIMEOUT_S:g} s", infra=True)
            elif w.queue and w.queue[0].timeout is not None and now - w.head_since > w.queue[0].timeout:
                self._replace(w, f"timed out: no answer after {w.queue[0].timeout:g} s (worker killed)")
        self._dispatch()

    def result(self, tid: int) -> Any:
        """Wait for task ``tid``: its value, or a :class:`TaskFailed`."""
        while tid not in self._done:
            self.poll(0.5)
        return self._done.pop(tid)

    def map_unordered(self, fn: Callable[..., Any], arglist: list[tuple]) -> Iterator[tuple[int, Any]]:
        """``(index, value or TaskFailed)`` for each args tuple, as they finish."""
        ids = {self.submit(fn, *a): i for i, a in enumerate(arglist)}
        while ids:
            for tid in [t for t in ids if t in self._done]:
                yield ids.pop(tid), self._done.pop(tid)
            if ids:
                self.poll(0.5)

    def drop_results(self, release: Callable[[Any], None]) -> None:
        """Forget answers nobody collected (a fill that stopped early), calling ``release`` on each."""
        for value in self._done.values():
            release(value)
        self._done.clear()

    def close(self) -> None:
        """Stop every worker (asked first, killed after a second); idempotent."""
        for w in self._workers:
            try:
                w.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        deadline = time.monotonic() + 1.0
        for w in self._workers:
            try:
                w.proc.wait(max(0.01, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                w.proc.kill()
                _reap(w.proc)
            w.conn.close()
        self._workers = []

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
