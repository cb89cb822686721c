"""What a worker hands back for one row: a typed value instead of a dict of optional keys.

A decode gives ``frames`` (uint8 ``[K, H, W, 3]``: in shared memory from a CPU worker, a tensor after
:meth:`~mmfs_assets.engine.decoders.FrameSource.result` or from NVDEC), their ``timestamps`` and the
``frames_decoded``; a metadata probe gives ``values``. ``error`` is the row's own failure (it becomes the
row's ``<group>_error``); ``deferred`` a failure that is not the row's (the storage), which leaves the row
for the next run. Crashes and hangs of a worker are the pool's :class:`~mmfs_assets.engine.pool.TaskFailed`.
The class is top-level and holds plain values, so it crosses the worker pipe by pickle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class RowResult:
    seconds: float = 0.0  # the worker's time on the row
    error: str | None = None
    deferred: str | None = None
    storage_retries: int = 0
    frames: Any = None
    timestamps: Any = None
    frames_decoded: int = 0
    values: dict[str, Any] = field(default_factory=dict)  # the metadata probe's columns
