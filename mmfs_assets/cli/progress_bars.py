"""Rich progress bars fed by the assets' progress trackers (see :mod:`mmfs_assets.progress`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from mmfs_assets.progress import use_sink


@contextlib.contextmanager
def rich_progress(console: Console) -> Iterator[None]:
    bars = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=False,
    )
    tasks: dict[str, TaskID] = {}

    def sink(task: str, done: int, total: int) -> None:
        if task not in tasks:
            tasks[task] = bars.add_task(task, total=total)
        bars.update(tasks[task], completed=done, total=total)

    with bars, use_sink(sink):
        yield
