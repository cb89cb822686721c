"""The decode engine's CPU decoder: chosen frames of one video, planned from the metadata columns.

Both the feature fills (frames at the centres of equal slices) and the training loader (a window of
consecutive or strided frames at a drawn position) call :func:`decode_frames` with the times they want,
so there is one implementation of "which frames, at what cost".

Decoding is planned from the video's keyframe times (metadata column ``keyframe_times``):

- ``exact`` (the frame on screen at each target time): for each target, the keyframe before it is
  looked up; when that keyframe lies beyond the decoder's position the decoder seeks to it, otherwise it
  decodes forward from where it is. On a 1 s GOP with targets 1 s apart this decodes about half a GOP
  per frame taken instead of the whole video.
- ``keyframe``: each target is snapped to the nearest keyframe and only keyframes are decoded (FFmpeg
  ``skip_frame=NONKEY``, one seek per distinct keyframe): about one frame decoded per frame taken. A
  video with fewer keyframes than targets repeats frames; the returned times say which frames came.

Every call reports the frames it decoded, so callers can count the decode amplification (frames
decoded per frame taken). Rows described before keyframe times were recorded fall back to seeking only
when the next target is more than one mean keyframe interval ahead.

Scaling and RGB conversion happen in FFmpeg (swscale) straight to the requested size (the long side at
most :data:`MAX_SCALED_ASPECT` times the short side, see :func:`output_size`); the display rotation
(metadata ``rotation``) is applied so frames come out upright.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import av
import numpy as np

SAMPLING_MODES = ("exact", "keyframe")
# A frame scaled to a short side S is at most MAX_SCALED_ASPECT x S long (squashed beyond): the bound on
# what one frame costs the decoders (here, the loader's clips) and the fills' preprocessing
# (mmfs_assets.engine.preprocess). Above the metadata probe's default MMFS_MAX_ASPECT_RATIO (10), so the
# videos it admits by default keep their shape; raising that limit past 16 admits videos that are squashed.
MAX_SCALED_ASPECT = 16


class DecodeError(RuntimeError):
    """This video's frames cannot be decoded."""


@dataclass(frozen=True)
class VideoPlan:
    """What the metadata columns say about a video, enough to plan the seeks."""

    duration_s: float
    fps: float
    keyframe_interval: float  # frames between keyframes (mean)
    rotation: int = 0
    keyframe_times: tuple[float, ...] | None = None  # seconds from the stream start, ascending
    is_vfr: bool = False

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> VideoPlan:
        """The plan from a row's metadata columns (missing values fall back to safe defaults)."""
        kts = row.get("keyframe_times")
        return cls(
            duration_s=float(row.get("duration_s") or 0.0),
            fps=float(row.get("fps") or 0.0),
            keyframe_interval=float(row.get("keyframe_interval") or 0.0),
            rotation=int(row.get("rotation") or 0),
            keyframe_times=tuple(float(x) for x in kts) if kts else None,
            is_vfr=bool(row.get("is_vfr")),
        )

    def targets(self, count: int) -> np.ndarray:
        """``count`` times at the centres of equal slices of the video (seconds from its start)."""
        return (np.arange(count) + 0.5) * (self.duration_s / count)


# The metadata columns a plan is built from (``keyframe_times`` only where the table has it).
PLAN_COLUMNS = ("duration_s", "fps", "keyframe_interval", "rotation", "is_vfr", "keyframe_times")
REQUIRED_PLAN_COLUMNS = PLAN_COLUMNS[:5]


def plan_columns(names: Sequence[str]) -> list[str]:
    """The plan columns a table with columns ``names`` has (older tables lack ``keyframe_times``)."""
    return [c for c in PLAN_COLUMNS if c in names or c in REQUIRED_PLAN_COLUMNS]


@dataclass
class Decoded:
    """Frames taken (uint8 RGB ``[K, H, W, 3]``), their presentation times, and what it cost."""

    frames: np.ndarray
    timestamps: np.ndarray
    frames_decoded: int
    seeks: int

    @property
    def amplification(self) -> float:
        """Frames decoded per frame taken."""
        return self.frames_decoded / max(1, len(self.frames))


def output_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """(w, h) with the shorter side scaled to ``short_side`` (aspect kept, even sizes), or the native size.

    The longer side is at most :data:`MAX_SCALED_ASPECT` times ``short_side``: a frame more elongated
    than that is squashed along its long side, so what a decode allocates is bounded by the size asked
    for, whatever the video's shape (a 16384x2 video at short side 70 is 1120x70, not 573440x70)."""
    if not short_side:
        return width, height
    scale = short_side / min(width, height)
    cap = MAX_SCALED_ASPECT * short_side
    w, h = min(cap, width * scale), min(cap, height * scale)
    return max(2, round(w / 2) * 2), max(2, round(h / 2) * 2)


def decode_frames(
    src: str | BinaryIO,
    plan: VideoPlan,
    times: Sequence[float] | np.ndarray,
    short_side: int | None = None,
    *,
    mode: str = "exact",
    threads: int = 0,
) -> Decoded:
    """The frames at ``times`` (seconds from the video's start, ascending) under sampling ``mode``.

    ``src`` is a path or a seekable file (a Lance blob). ``threads``: FFmpeg decoder threads (0: FFmpeg's
    default; 1 in the engine's worker processes, where processes give the parallelism).
    """
    if mode not in SAMPLING_MODES:
        raise ValueError(f"sampling mode {mode!r}: choose one of {SAMPLING_MODES}")
    try:
        with av.open(src, metadata_errors="ignore") as c:
            s = next((st for st in c.streams if st.type == "video"), None)
            if s is None:
                raise DecodeError("no video stream")
            if threads:
                s.thread_type = "NONE" if threads == 1 else "AUTO"
                s.codec_context.thread_count = threads
            sampler = _Sampler(c, s, plan, short_side)
            want = np.asarray(times, dtype=np.float64)
            if mode == "keyframe" and plan.keyframe_times:
                return sampler.keyframes(want)
            if mode == "keyframe":
                return sampler.keyframes_unplanned(want)
            return sampler.exact(want)
    except av.error.FFmpegError as e:
        raise DecodeError(f"decode failed: {e.strerror or e}") from e


def decode_at(
    src: str | BinaryIO, plan: VideoPlan, times: Sequence[float] | np.ndarray, short_side: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The frames on screen at ``times`` and their presentation times (``exact`` mode)."""
    d = decode_frames(src, plan, times, short_side)
    return d.frames, d.timestamps


class _Sampler:
    """One open video stream and the decoder's position in it."""

    def __init__(self, c, s, plan: VideoPlan, short_side: int | None) -> None:
        self.c, self.s, self.plan, self.short_side = c, s, plan, short_side
        self.tb = s.time_base
        self.fps = plan.fps if plan.fps and plan.fps > 0 else 25.0
        self.half = 0.5 / self.fps
        self.start = float(s.start_time * self.tb) if s.start_time is not None and self.tb else 0.0
        self.size: tuple[int, int] | None = None
        self.decoded = 0
        self.seeks = 0
        self.it = None  # the running decode iterator
        self.pos: float | None = None  # stream time of the last frame the iterator gave
        self.last: tuple[float, Any] | None = None  # (time, frame): the last frame decoded

    def _seek(self, t_abs: float) -> None:
        self.c.seek(int(round(t_abs / self.tb)), stream=self.s, backward=True, any_frame=False)
        self.it = self.c.decode(self.s)
        self.pos = None
        self.seeks += 1

    def _next_at_or_after(self, t_abs: float):
        """Decode forward to the first frame shown at or after ``t_abs`` (minus half a frame)."""
        if self.it is None:
            self.it = self.c.decode(self.s)
        hit = None
        for f in self.it:
            self.decoded += 1
            self.pos = f.time if f.time is not None else (self.pos + 1 / self.fps if self.pos is not None else 0.0)
            self.last = (self.pos, f)
            if self.pos >= t_abs - self.half:
                hit = self.last
                break
        if hit is None:  # the stream ended before t: the last frame is what is on screen
            if self.last is None:
                raise DecodeError(f"no frame decodes at or before t={t_abs - self.start:.3f}s")
            hit = self.last
            self.it = None  # exhausted: a later target starts a new iterator (after a seek)
        return hit

    def _rgb(self, frame) -> np.ndarray:
        if self.size is None:
            self.size = output_size(frame.width, frame.height, self.short_side)
        rgb = frame.reformat(width=self.size[0], height=self.size[1], format="rgb24", interpolation="AREA").to_ndarray()
        if self.plan.rotation % 360:
            rgb = np.ascontiguousarray(np.rot90(rgb, k=(self.plan.rotation % 360) // 90))
        return rgb

    def _result(self, frames: list[np.ndarray], stamps: list[float]) -> Decoded:
        return Decoded(np.stack(frames), np.asarray(stamps, dtype=np.float64), self.decoded, self.seeks)

    def exact(self, times: np.ndarray) -> Decoded:
        kts = np.asarray(self.plan.keyframe_times, dtype=np.float64) if self.plan.keyframe_times else None
        gop_s = max(self.plan.keyframe_interval, 1.0) / self.fps
        # The wanted frame is the first shown at or after t - half a frame. At a constant rate it lies
        # before t + half, so a keyframe up to there IS that frame (a target on a keyframe seeks to
        # it); with a variable rate only keyframes before t - half are surely not past it.
        reach = -self.half if self.plan.is_vfr else self.half - 1e-6
        frames: list[np.ndarray] = []
        stamps: list[float] = []
        taken_t: float | None = None
        for t in self.start + times:
            if taken_t is not None and taken_t >= t - self.half:
                frames.append(frames[-1])  # the frame on screen at t is the one already taken
                stamps.append(stamps[-1])
                continue
            if kts is not None:
                # the keyframe at or before the wanted frame; seek when it lies beyond the decoder
                i = max(0, int(np.searchsorted(kts, t - self.start + reach, side="right")) - 1)
                key_abs = self.start + kts[i]
                if self.it is None or self.pos is None or key_abs > self.pos + 1e-9:
                    self._seek(key_abs)
            elif self.it is None or self.pos is None or t - self.pos > gop_s:
                self._seek(t)
            hit = self._next_at_or_after(t)
            taken_t = hit[0]
            frames.append(self._rgb(hit[1]))
            stamps.append(hit[0] - self.start)
        return self._result(frames, stamps)

    def keyframes(self, times: np.ndarray) -> Decoded:
        """Each target snapped to the nearest keyframe (ties to the earlier); only keyframes decoded."""
        kts = np.asarray(self.plan.keyframe_times, dtype=np.float64)
        idx = np.abs(kts[None, :] - times[:, None]).argmin(axis=1)  # argmin takes the earlier on a tie
        self.s.codec_context.skip_frame = "NONKEY"
        frames: list[np.ndarray] = []
        stamps: list[float] = []
        taken: int | None = None
        for i in idx:
            if taken == int(i):
                frames.append(frames[-1])
                stamps.append(stamps[-1])
                continue
            key_abs = self.start + kts[int(i)]
            if self.it is None or self.pos is None or key_abs > self.pos + self.half:
                self._seek(key_abs)
            hit = self._next_at_or_after(key_abs)
            taken = int(i)
            frames.append(self._rgb(hit[1]))
            stamps.append(hit[0] - self.start)
        return self._result(frames, stamps)

    def keyframes_unplanned(self, times: np.ndarray) -> Decoded:
        """Without recorded keyframe times: the keyframe at or before each target."""
        self.s.codec_context.skip_frame = "NONKEY"
        frames: list[np.ndarray] = []
        stamps: list[float] = []
        for t in self.start + times:
            self._seek(t)
            hit = self._next_at_or_after(-np.inf)
            if stamps and hit[0] - self.start == stamps[-1]:
                frames.append(frames[-1])
            else:
                frames.append(self._rgb(hit[1]))
            stamps.append(hit[0] - self.start)
        return self._result(frames, stamps)
