"""NVDEC decoding through PyNvVideoCodec: frames decoded on the GPU and left there.

Shared by the fill engine (``MMFS_DECODER``) and the training loader (``Reading(decoder=...)``); it
imports PyNvVideoCodec only when a lane is made.

One ``SimpleDecoder`` per thread, reused across videos with ``reconfigure_decoder`` (creating a
decoder per video costs more than decoding 8 frames: measured 3.5 vs 8.7 videos/s per thread on an
H100, see ``research/gpu_decode.md``). The decoder reads the Lance blob file object directly. Frames come
out planar RGB (``RGBP``) through DLPack as ``[3, H, W]`` uint8 CUDA tensors; the engine's device
preprocessing resizes them, so no pixel crosses PCIe.

Frame indices come from the target times: exact mode takes the frame shown at ``t`` (constant frame
rate assumed, so VFR videos go to the CPU workers), keyframe mode the keyframes from the metadata
column. A video NVDEC refuses (codec, profile, size) comes back as an error and the engine decodes it
on a CPU worker instead.
"""

from __future__ import annotations

import importlib.util
import itertools
import math
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from mmfs_loader.contract import schema as S
from mmfs_loader.decode.video import VideoPlan


def nvdec_available() -> str | None:
    """None when NVDEC can be used here, else why not."""
    if importlib.util.find_spec("PyNvVideoCodec") is None:
        return "PyNvVideoCodec is not installed (pip install 'mmfs[gpu]')"
    import torch

    if not torch.cuda.is_available():
        return "CUDA is not available"
    return None


def frame_indices(plan: VideoPlan, times: list[float], mode: str) -> tuple[list[int], np.ndarray]:
    """Frame indices to fetch and their times, for a constant-frame-rate video."""
    fps = plan.fps
    if mode == "keyframe" and plan.keyframe_times:
        kts = np.asarray(plan.keyframe_times)
        chosen = kts[np.abs(kts[None, :] - np.asarray(times)[:, None]).argmin(axis=1)]
        idx = [int(round(k * fps)) for k in chosen]
    else:
        idx = [max(0, math.ceil((t - 0.5 / fps) * fps - 1e-6)) for t in times]
    last = max(0, int(round(plan.duration_s * fps)) - 1)
    idx = [min(i, last) for i in idx]
    return idx, np.asarray(idx, dtype=np.float64) / fps


def nvdec_accepts(plan: VideoPlan) -> bool:
    """Constant-rate videos with known timing whose first frame is at 0 (frame index = time x fps); the rest
    go to CPU workers. MPEG-4 Part 2 with B-frames in AVI starts one frame late (FFmpeg's times include the
    decoder delay: ``Megamind.avi``'s first keyframe is at 0.042 s), so its index would be off by one frame."""
    if not (plan.fps and plan.fps > 0 and plan.duration_s > 0 and not plan.is_vfr):
        return False
    return not plan.keyframe_times or abs(plan.keyframe_times[0]) < 0.5 / plan.fps


class NvdecLane:
    """``threads`` NVDEC decoders fed from a thread pool in the model's process."""

    def __init__(self, table, threads: int = 4, gpu_id: int = 0) -> None:
        import PyNvVideoCodec as nvc  # noqa: N813 - NVIDIA's module name

        self._nvc = nvc
        self._table = table
        self._gpu = gpu_id
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="mmfs-nvdec")
        self._futures: dict[int, Future] = {}
        self._ids = itertools.count()
        self.capacity = 2 * threads

    def accepts(self, plan: VideoPlan) -> bool:
        return nvdec_accepts(plan)

    def full(self) -> bool:
        return sum(not f.done() for f in self._futures.values()) >= self.capacity

    def submit(self, rowid: int, plan: VideoPlan, times: list[float], short_side: int | None, mode: str) -> int:
        tid = next(self._ids)
        self._futures[tid] = self._pool.submit(self._decode, rowid, plan, times, mode)
        return tid

    def result(self, tid: int) -> dict[str, Any]:
        return self._futures.pop(tid).result()

    def _decoder(self, source):
        d = getattr(self._local, "decoder", None)
        if d is None:
            nvc = self._nvc
            d = nvc.SimpleDecoder(source, gpu_id=self._gpu, use_device_memory=True, output_color_type=nvc.OutputColorType.RGBP)
            self._local.decoder = d
        else:
            d.reconfigure_decoder(source)
        return d

    def _decode(self, rowid: int, plan: VideoPlan, times: list[float], mode: str) -> dict[str, Any]:
        import torch

        t0 = time.perf_counter()
        try:
            blob = self._table.take_blobs(S.VIDEO, ids=[rowid])[0]
            if blob is None:
                return {"error": "no video stored for this row"}
            idx, stamps = frame_indices(plan, times, mode)
            with blob:
                dec = self._decoder(blob)
                uniq = sorted(set(idx))
                got = dict(zip(uniq, dec.get_batch_frames_by_index(uniq)))
                frames = torch.stack([torch.from_dlpack(got[i]) for i in idx])  # [K, 3, H, W] on the GPU
            if plan.rotation % 360:
                frames = torch.rot90(frames, k=(plan.rotation % 360) // 90, dims=(2, 3))
            return {
                "frames": frames.permute(0, 2, 3, 1),  # the engine's layout: [K, H, W, 3]
                "timestamps": stamps,
                "frames_decoded": len(uniq),  # NVDEC's own seeks are not visible: a lower bound
                "seconds": time.perf_counter() - t0,
            }
        except Exception as e:  # noqa: BLE001 - NVDEC refused it: the CPU workers get the row
            self._local.decoder = None
            return {"error": f"nvdec: {type(e).__name__}: {e}"}

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
