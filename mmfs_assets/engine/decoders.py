"""Which decoder a fill uses (``MMFS_DECODER=auto|cpu|nvdec``) and the source that hands out frames.

- ``cpu``: spawned worker processes, one single-threaded FFmpeg decoder each (:mod:`.pool`).
- ``nvdec``: the GPU's video decoder through PyNvVideoCodec (:mod:`mmfs_loader.decode.nvdec`), frames stay on the device;
  CPU workers still take what NVDEC cannot (VFR timing, codecs it refuses).
- ``auto``: NVDEC alongside the CPU workers when the model runs on CUDA and PyNvVideoCodec is installed
  (``pip install 'mmfs[gpu]'``), else CPU workers; the choice and its reason go to the run's log.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from mmfs_assets.engine import tasks
from mmfs_assets.engine.pool import TaskFailed, WorkerPool
from mmfs_assets.engine.row_result import RowResult
from mmfs_assets.engine.shm import SharedFrames
from mmfs_loader.decode.nvdec import nvdec_available

DECODERS = ("auto", "cpu", "nvdec")


class DecoderUnavailableError(RuntimeError):
    """The decoder asked for cannot run here; the message says why and what to set."""


@dataclass(frozen=True)
class DecoderChoice:
    nvdec: bool
    reason: str

    @property
    def name(self) -> str:
        return "nvdec+cpu" if self.nvdec else "cpu"


def choose_decoder(pref: str, device: str, *, probe=nvdec_available) -> DecoderChoice:
    """The decoder for a fill whose model runs on ``device``, from the setting ``pref``."""
    if pref not in DECODERS:
        raise DecoderUnavailableError(f"MMFS_DECODER={pref!r}: choose one of {', '.join(DECODERS)}")
    if pref == "cpu":
        return DecoderChoice(False, "MMFS_DECODER=cpu")
    if not str(device).startswith("cuda"):
        if pref == "nvdec":
            raise DecoderUnavailableError(f"MMFS_DECODER=nvdec but the model runs on {device}: NVDEC frames live on a CUDA device")
        return DecoderChoice(False, f"auto: the model runs on {device}, so CPU workers decode")
    why_not = probe()
    if why_not is not None:
        if pref == "nvdec":
            raise DecoderUnavailableError(f"MMFS_DECODER=nvdec but {why_not}; use MMFS_DECODER=auto or cpu")
        return DecoderChoice(False, f"auto: {why_not}, so CPU workers decode")
    return DecoderChoice(True, f"{pref}: CUDA and PyNvVideoCodec present, NVDEC decodes alongside the CPU workers")


def default_workers() -> int:
    """The cores this process may use (``MMFS_DECODE_WORKERS``, read by the settings, overrides it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


class FrameSource:
    """Decode tasks spread over the CPU worker pool and, when chosen, an NVDEC lane.

    ``submit`` returns a handle; ``result`` waits for it: a :class:`~.row_result.RowResult` whose ``frames``
    are a uint8 ``[K, H, W, 3]`` tensor (on the GPU when NVDEC decoded it), or a :class:`TaskFailed` when the
    decoder crashed or hung.
    """

    def __init__(self, pool: WorkerPool, nvdec: Any | None = None, decode_timeout: float | None = None,
                 task=tasks.decode_row) -> None:
        self.pool = pool
        self.task = task
        self.nvdec = nvdec
        self.timeout = decode_timeout
        self._args: dict[tuple[str, int], tuple] = {}
        self.nvdec_rows = 0
        self.nvdec_fallbacks = 0

    def submit(self, rowid: int, plan, times: list[float], short_side: int | None, mode: str) -> tuple[str, int]:
        args = (rowid, plan, times, short_side, mode)
        if self.nvdec is not None and self.nvdec.accepts(plan) and not self.nvdec.full():
            h = ("nvdec", self.nvdec.submit(*args))
        else:
            h = ("cpu", self.pool.submit(self.task, *args, timeout=self.timeout))
        self._args[h] = args
        return h

    def result(self, h: tuple[str, int]) -> RowResult | TaskFailed:
        args = self._args.pop(h)
        if h[0] == "cpu":
            return self._taken(self.pool.result(h[1]))
        assert self.nvdec is not None  # only NVDEC handles are not "cpu"
        out = self.nvdec.result(h[1])
        if isinstance(out, dict) and "error" not in out:
            self.nvdec_rows += 1
            return RowResult(out.get("seconds", 0.0), frames=out["frames"], timestamps=out["timestamps"],
                             frames_decoded=out["frames_decoded"])
        self.nvdec_fallbacks += 1  # NVDEC refused this video: a CPU worker decodes it
        return self._taken(self.pool.result(self.pool.submit(self.task, *args, timeout=self.timeout)))

    def _taken(self, out: RowResult | TaskFailed) -> RowResult | TaskFailed:
        """Frames out of shared memory into this process (the batch is pinned when it is gathered)."""
        if isinstance(out, RowResult) and isinstance(out.frames, SharedFrames):
            out.frames = out.frames.take()
        return out
