"""Decoding only the frames a feature needs, planned from the metadata columns.

For ``K`` frames the targets are the centres of ``K`` equal slices of the video (``(i + 0.5) * T / K``).
Walking the targets in order, the decoder seeks (to the keyframe before the target) only when the next
target is further ahead than the video's keyframe interval (a metadata column), so a keyframe surely
lies between; otherwise it decodes forward from where it is. Decoding every frame would cost the whole
video; seeking before every target would re-decode the same GOP again and again on long-GOP videos.

Scaling and RGB conversion happen in FFmpeg (swscale) straight to the requested size; the display
rotation (metadata ``rotation``) is applied so frames come out upright.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO

import av
import numpy as np

from mmfs_assets.features.spec import Clip, FrameRequest


class DecodeError(RuntimeError):
    """This video's frames cannot be decoded (the row gets an error, the run goes on)."""


@dataclass(frozen=True)
class VideoPlan:
    """What the metadata columns say about a video, enough to plan the seeks."""

    duration_s: float
    fps: float
    keyframe_interval: float  # frames between keyframes (mean)
    rotation: int = 0

    def targets(self, count: int) -> np.ndarray:
        return (np.arange(count) + 0.5) * (self.duration_s / count)


def output_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """(w, h) with the shorter side scaled to ``short_side`` (aspect kept, even sizes), or the native size."""
    if not short_side:
        return width, height
    scale = short_side / min(width, height)
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def decode_clip(src: str | BinaryIO, rowid: int, plan: VideoPlan, req: FrameRequest) -> Clip:
    """Decode ``req.count`` frames of one video (a path or a seekable file such as a Lance blob)."""
    try:
        with av.open(src, metadata_errors="ignore") as c:
            return _sample(c, rowid, plan, req)
    except av.error.FFmpegError as e:
        raise DecodeError(f"decode failed: {e.strerror or e}") from e


def _sample(c, rowid: int, plan: VideoPlan, req: FrameRequest) -> Clip:
    s = next((st for st in c.streams if st.type == "video"), None)
    if s is None:
        raise DecodeError("no video stream")
    tb = s.time_base
    fps = plan.fps if plan.fps and plan.fps > 0 else 25.0
    half = 0.5 / fps
    gop_s = max(plan.keyframe_interval, 1.0) / fps
    start = float(s.start_time * tb) if s.start_time is not None and tb else 0.0
    frames: list[np.ndarray] = []
    stamps: list[float] = []
    size: tuple[int, int] | None = None
    it = None  # the running decode iterator
    pos: float | None = None  # time of the last frame the iterator gave
    last = None  # (time, frame): the last frame decoded
    taken_t: float | None = None  # time of the last frame taken
    for t in start + plan.targets(req.count):
        if taken_t is not None and taken_t >= t - half:
            frames.append(frames[-1])  # the frame on screen at t is the one already taken
            stamps.append(stamps[-1])
            continue
        if it is None or pos is None or t - pos > gop_s:
            c.seek(int(t / tb), stream=s, backward=True, any_frame=False)
            it = c.decode(s)
        hit = None
        for f in it:
            pos = f.time if f.time is not None else (pos + 1 / fps if pos is not None else 0.0)
            last = (pos, f)
            if pos >= t - half:
                hit = last
                break
        if hit is None:  # the stream ended before t: the last frame is what is on screen
            if last is None:
                raise DecodeError(f"no frame decodes at or before t={t - start:.3f}s")
            hit = last
        if size is None:
            size = output_size(hit[1].width, hit[1].height, req.short_side)
        rgb = hit[1].reformat(width=size[0], height=size[1], format="rgb24", interpolation="AREA").to_ndarray()
        if plan.rotation % 360:
            rgb = np.ascontiguousarray(np.rot90(rgb, k=(plan.rotation % 360) // 90))
        taken_t = hit[0]
        frames.append(rgb)
        stamps.append(hit[0] - start)
    return Clip(rowid=rowid, frames=np.stack(frames), timestamps=np.asarray(stamps, dtype=np.float64))
