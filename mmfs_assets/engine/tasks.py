"""What the engine's worker processes run: open the table once, then decode, probe or post-process rows.

Each function is a top-level function (pickled by name) that returns plain values; decoded frames go
back through shared memory (:mod:`mmfs_assets.engine.shm`). Workers never import torch. Failures that belong to the
row (a decode error, a missing blob) come back as ``{"error": ...}``; crashes and hangs are the pool's.
"""

from __future__ import annotations

import os
import time
from typing import Any

import lance

from mmfs_assets.engine.shm import SharedFrames
from mmfs_loader import schema as S
from mmfs_loader.table import TableRef
from mmfs_loader.video import DecodeError, VideoPlan, decode_frames

_table: lance.LanceDataset | None = None


def open_table(table: TableRef, version: int | None) -> None:
    """Worker initializer: the table at the version the fill planned from (blobs do not change)."""
    global _table
    os.environ.setdefault("LANCE_LOG", "error")
    _table = table.dataset(version)


def _blob(rowid: int):
    assert _table is not None, "open_table did not run in this worker"
    blob = _table.take_blobs(S.VIDEO, ids=[rowid])[0]
    if blob is None:
        raise FileNotFoundError("no video stored for this row")
    return blob


def decode_row(rowid: int, plan: VideoPlan, times: list[float], short_side: int | None, mode: str) -> dict[str, Any]:
    """The row's frames at ``times`` (uint8 ``[K, H, W, 3]`` in shared memory), with times and decode counts."""
    t0 = time.perf_counter()
    try:
        with _blob(rowid) as blob:
            d = decode_frames(blob, plan, times, short_side, mode=mode, threads=1)
    except DecodeError as e:
        return {"error": str(e), "seconds": time.perf_counter() - t0}
    except Exception as e:  # noqa: BLE001 - unreadable bytes are this row's error
        return {"error": f"cannot decode: {type(e).__name__}: {e}", "seconds": time.perf_counter() - t0}
    return {
        "frames": SharedFrames.put(d.frames),
        "timestamps": d.timestamps,
        "frames_decoded": d.frames_decoded,
        "seconds": time.perf_counter() - t0,
    }


def probe_row(rowid: int, size_bytes: int, max_corrupt_frames: int) -> dict[str, Any]:
    """The metadata group's values of a row (``probe_video``), or its error."""
    from mmfs_assets.ingest.probe import probe_video

    t0 = time.perf_counter()
    try:
        with _blob(rowid) as blob:
            r = probe_video(blob, size_bytes=size_bytes, max_corrupt_frames=max_corrupt_frames)
    except Exception as e:  # noqa: BLE001
        return {"values": {}, "error": f"cannot read the video: {type(e).__name__}: {e}", "seconds": time.perf_counter() - t0}
    return {"values": r.values, "error": r.error, "frames_decoded": r.values.get("num_frames") or 0,
            "seconds": time.perf_counter() - t0}


def call(fn, *args: Any) -> Any:
    """Run a feature's post-processing (e.g. depth PNG encoding) in a worker."""
    return fn(*args)
