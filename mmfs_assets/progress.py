"""Progress of long work: logged by default, drawn as rich progress bars when the CLI installs a sink.

Assets call :func:`tracker`; inside ``mmfs materialize``/``mmfs demo`` (in-process runs) the CLI sets a
sink that draws bars, elsewhere (runs launched by the daemon) progress is logged at every 10%.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Protocol


class ProgressSink(Protocol):
    def __call__(self, task: str, done: int, total: int) -> None: ...


# A process-wide slot, not a ContextVar: Dagster may run the step on another thread of this process.
_sink: list[ProgressSink | None] = [None]


@contextlib.contextmanager
def use_sink(sink: ProgressSink) -> Iterator[None]:
    previous, _sink[0] = _sink[0], sink
    try:
        yield
    finally:
        _sink[0] = previous


def tracker(log: Callable[[str], None], task: str) -> Callable[[int, int], None]:
    """A ``(done, total)`` callback for ``task``: feeds the sink if one is set, else logs each 10%."""
    last = [-1]

    def update(done: int, total: int) -> None:
        sink = _sink[0]
        if sink is not None:
            sink(task, done, total)
            return
        pct = int(100 * done / total) if total else 100
        if pct // 10 > last[0] or done >= total:
            last[0] = pct // 10
            log(f"{task}: {done}/{total} ({pct}%)")

    return update
