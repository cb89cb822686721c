"""Decoding chosen frames of one video, with seeks planned from the metadata columns.

Both the feature fills (frames at the centres of equal slices) and the training loader (a window of
consecutive or strided frames at a drawn position) call :func:`decode_at` with the times they want.
Walking the times in order, the decoder seeks (to the keyframe before the target) only when the next
target is further ahead than the video's keyframe interval (a metadata column), so a keyframe surely
lies between; otherwise it decodes forward from where it is. Decoding every frame would cost the whole
video; seeking before every target would re-decode the same GOP again and again on long-GOP videos.

Scaling and RGB conversion happen in FFmpeg (swscale) straight to the requested size; the display
rotation (metadata ``rotation``) is applied so frames come out upright.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import av
import numpy as np


class DecodeError(RuntimeError):
    """This video's frames cannot be decoded."""


@dataclass(frozen=True)
class VideoPlan:
    """What the metadata columns say about a video, enough to plan the seeks."""

    duration_s: float
    fps: float
    keyframe_interval: float  # frames between keyframes (mean)
    rotation: int = 0

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> VideoPlan:
        """The plan from a row's metadata columns (missing values fall back to safe defaults)."""
        return cls(
            duration_s=float(row.get("duration_s") or 0.0),
            fps=float(row.get("fps") or 0.0),
            keyframe_interval=float(row.get("keyframe_interval") or 0.0),
            rotation=int(row.get("rotation") or 0),
        )

    def targets(self, count: int) -> np.ndarray:
        """``count`` times at the centres of equal slices of the video (seconds from its start)."""
        return (np.arange(count) + 0.5) * (self.duration_s / count)


# The metadata columns a plan is built from.
PLAN_COLUMNS = ("duration_s", "fps", "keyframe_interval", "rotation")


def output_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """(w, h) with the shorter side scaled to ``short_side`` (aspect kept, even sizes), or the native size."""
    if not short_side:
        return width, height
    scale = short_side / min(width, height)
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def decode_at(
    src: str | BinaryIO, plan: VideoPlan, times: Sequence[float] | np.ndarray, short_side: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The frames on screen at ``times`` (seconds from the video's start, ascending), as uint8 RGB
    ``[K, H, W, 3]``, and their presentation times. ``src`` is a path or a seekable file (a Lance blob)."""
    try:
        with av.open(src, metadata_errors="ignore") as c:
            return _sample(c, plan, np.asarray(times, dtype=np.float64), short_side)
    except av.error.FFmpegError as e:
        raise DecodeError(f"decode failed: {e.strerror or e}") from e


def _sample(c, plan: VideoPlan, times: np.ndarray, short_side: int | None) -> tuple[np.ndarray, np.ndarray]:
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
    for t in start + times:
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
            size = output_size(hit[1].width, hit[1].height, short_side)
        rgb = hit[1].reformat(width=size[0], height=size[1], format="rgb24", interpolation="AREA").to_ndarray()
        if plan.rotation % 360:
            rgb = np.ascontiguousarray(np.rot90(rgb, k=(plan.rotation % 360) // 90))
        taken_t = hit[0]
        frames.append(rgb)
        stamps.append(hit[0] - start)
    return np.stack(frames), np.asarray(stamps, dtype=np.float64)
