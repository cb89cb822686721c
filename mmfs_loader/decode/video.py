"""The decode engine's CPU decoder: chosen frames of one video, planned from the metadata columns.

Both the feature fills (frames at the centres of equal slices) and the training loader (a window of
consecutive or strided frames at a drawn position) call :func:`decode_frames` with the times they want,
so there is one implementation of "which frames, at what cost".

Decoding is planned from the video's keyframe times (metadata column ``keyframe_times``):

- ``exact`` (the frame on screen at each target time): for each target, the keyframe before it is
  looked up; when that keyframe lies beyond the decoder's position the decoder seeks to it, otherwise it
  decodes forward from where it is. On a 1 s GOP with targets 1 s apart this decodes about half a GOP
  per frame taken instead of the whole video.
- ``keyframe``: each target is snapped to the nearest keyframe and only keyframes are decoded (one seek
  per distinct keyframe, that keyframe's packet decoded and the decoder drained): about one frame
  decoded per frame taken. A video with fewer keyframes than targets repeats frames; the returned times
  say which frames came. A keyframe the stream does not have where the metadata says is the row's
  :class:`DecodeError`, never another frame in its place.

Seeks are checked: decoding starts at the last keyframe packet at or before the keyframe wanted, found
from where the seek landed (AVI seeks by dts, and can land on a later keyframe). Frame times are
presentation times (:class:`FrameClock`; MPEG-4 Part 2 AVI files with packed B-frames, such as OpenCV's
``Megamind.avi``, give decoded frames permuted pts).

Every call reports the frames it decoded, so callers can count the decode amplification (frames
decoded per frame taken). Rows described before keyframe times were recorded fall back to seeking only
when the next target is more than one mean keyframe interval ahead.

Scaling and RGB conversion happen in FFmpeg (swscale) straight to the requested size (the long side at
most :data:`MAX_SCALED_ASPECT` times the short side, see :func:`output_size`); the display rotation
(metadata ``rotation``) is applied so frames come out upright.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
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


def nearest_keyframes(keyframe_times: Sequence[float] | np.ndarray, times: np.ndarray) -> np.ndarray:
    """Index of the keyframe nearest each of ``times`` (ties to the earlier): what ``keyframe`` sampling
    decodes. Two targets on one index are a repeated frame."""
    kts = np.asarray(keyframe_times, dtype=np.float64)
    return np.abs(kts[None, :] - np.asarray(times, dtype=np.float64)[:, None]).argmin(axis=1)


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


class FrameClock:
    """The presentation time (seconds, stream time) of each frame a decoder returns, in the order it returns them.

    A decoded frame's pts is its presentation time, with one exception: MPEG-4 Part 2 in AVI. AVI stores no
    presentation times; FFmpeg makes each packet's pts from its dts and the decoder delay. With DivX-style
    "packed" B-frames (a reference frame and the first B-frame shown before it in one chunk, an N-VOP
    placeholder where the reference frame is shown; OpenCV's ``Megamind.avi``) the decoder labels frames
    with the pts of the packet it was decoding when it made them, and those come out permuted (B 3, B 5,
    P 4, ...: frames one slot early or late). The decoder does return exactly one frame per packet, in
    presentation order, so for these streams the dts of the packet whose decoding returned a frame
    (``frame.dts``) is its presentation time, on FFmpeg's scale (the first frame at one frame duration). That
    holds after a seek too, and needs one decoding thread (frame threads return frames later).

    Frames drained at the end of the stream have no packet: they follow the last one by one frame duration
    (an AVI stream's time base is the frame duration)."""

    def __init__(self, container: Any, stream: Any) -> None:
        self.by_dts: bool = container.format.name == "avi" and stream.codec_context.name == "mpeg4"
        tb = stream.time_base
        self.num: int = tb.numerator if tb else 0
        self.den: int = tb.denominator if tb else 1
        self.last_dts: int | None = None

    def reset(self) -> None:
        """After a seek."""
        self.last_dts = None

    def __call__(self, frame: Any) -> float | None:
        if not self.num:
            return frame.time
        d = frame.pts
        if self.by_dts:
            d = frame.dts if frame.dts is not None else (self.last_dts + 1 if self.last_dts is not None else d)
            self.last_dts = d
        # as PyAV computes frame.time, in the stream's time base (a frame drained with decode(None) has none)
        return None if d is None else float(d) * self.num / self.den


class _Sampler:
    """One open video stream and the decoder's position in it.

    Decoding starts at a keyframe *packet*: a seek lands on a keyframe chosen by the container's index,
    which is not always the one asked for (AVI's index is in dts, so a seek to a keyframe's pts can land
    on a later keyframe when keyframes are closer together than the decoder delay). :meth:`_position`
    checks where it landed, seeks earlier when it went past, and walks the packets forward to the last
    keyframe at or before the time wanted, decoding nothing on the way.
    """

    def __init__(self, c, s, plan: VideoPlan, short_side: int | None) -> None:
        self.c, self.s, self.plan, self.short_side = c, s, plan, short_side
        self.tb = s.time_base
        self.fps = plan.fps if plan.fps and plan.fps > 0 else 25.0
        self.half = 0.5 / self.fps
        self.start = float(s.start_time * self.tb) if s.start_time is not None and self.tb else 0.0
        self.clock = FrameClock(c, s)
        if self.clock.by_dts:
            s.thread_type = "NONE"  # one frame returned per packet decoded (see FrameClock)
        self.size: tuple[int, int] | None = None
        self.decoded = 0
        self.seeks = 0
        self.packets: Iterator[Any] | None = None  # packets from the decoder's position on
        self.it: Iterator[tuple[float, Any]] | None = None  # the running decode: (time, frame)
        self.pos: float | None = None  # stream time of the last frame the iterator gave
        self.last: tuple[float, Any] | None = None  # (time, frame): the last frame decoded

    def _pkt_time(self, p) -> float | None:
        ts = p.pts if p.pts is not None else p.dts
        return None if ts is None or not self.tb else float(ts) * self.tb.numerator / self.tb.denominator

    def _seek_to(self, ts: int) -> tuple[Any, Iterator[Any]]:
        """Seek to stream timestamp ``ts`` (the keyframe at or before it, by the container's index): the
        first packet there (None at the end) and the packets after it."""
        self.c.seek(ts, stream=self.s, backward=True, any_frame=False)
        self.seeks += 1
        demux = self.c.demux(self.s)
        first = next((p for p in demux if p.size), None)
        return first, demux

    def _position(self, t_abs: float) -> None:
        """Make the decoder start at the last keyframe packet at or before stream time ``t_abs``."""
        eps = 1e-6
        back = 0.0
        while True:
            at_start = t_abs - back <= self.start
            ts = int(self.s.start_time or 0) if at_start else int(round((t_abs - back) / self.tb))
            first, demux = self._seek_to(ts)
            ft = None if first is None else self._pkt_time(first)
            if at_start or (first is not None and (ft is None or ft <= t_abs + eps)):
                break
            back = max(2 * back, 1.0 / self.fps)  # landed past t (or nowhere): seek earlier
        buf: list[Any] = [] if first is None else [first]
        if first is not None and (ft is None or ft <= t_abs + eps):
            for p in demux:
                pt = self._pkt_time(p)
                if p.size and p.is_keyframe and pt is not None and pt <= t_abs + eps:
                    buf = [p]  # a later keyframe, still at or before t: start there
                    continue
                buf.append(p)
                if not p.size or (pt is not None and pt > t_abs + eps):
                    break
        self.packets = itertools.chain(buf, demux)
        self.it = self._frames(self.packets)
        self.pos = None
        self.clock.reset()

    def _frames(self, packets: Iterator[Any]) -> Iterator[tuple[float, Any]]:
        """Decode ``packets``: (presentation time, frame) in the order the decoder returns them."""
        for p in packets:
            for f in p.decode():
                self.decoded += 1
                t = self.clock(f)
                if t is None:
                    t = self.pos + 1 / self.fps if self.pos is not None else 0.0
                self.pos = t
                self.last = (t, f)
                yield t, f

    def _next_at_or_after(self, t_abs: float):
        """Decode forward to the first frame shown at or after ``t_abs`` (minus half a frame)."""
        if self.it is None:
            self._position(self.start)
        assert self.it is not None
        hit = None
        for t, f in self.it:
            if t >= t_abs - self.half:
                hit = (t, f)
                break
        if hit is None:  # the stream ended before t: the last frame is what is on screen
            if self.last is None:
                raise DecodeError(f"no frame decodes at or before t={t_abs - self.start:.3f}s")
            hit = self.last
            self.it = None  # exhausted: a later target starts a new iterator (after a seek)
        return hit

    def _keyframe(self, t_abs: float) -> tuple[float, Any]:
        """The keyframe that decoding from the last keyframe packet at or before ``t_abs`` returns first.

        Only that packet is decoded, then the decoder is drained, except where the frame's time comes from
        the packets after it (:class:`FrameClock`): there decoding goes on until the keyframe comes out (one
        packet more for MPEG-4 Part 2 with B-frames). Never ``skip_frame=NONKEY``: a decoder with a reorder
        delay then returns each keyframe only when the next keyframe is decoded, and the last one when it is
        drained, stamped with the pts of the last packet skipped (the end of the video)."""
        self._position(t_abs)
        assert self.packets is not None
        cc = self.s.codec_context
        try:
            for p in self.packets:
                frames = list(p.decode())
                drained = bool(p.size and p.is_keyframe and not self.clock.by_dts)
                if drained:
                    frames += cc.decode(None)
                for f in frames:
                    self.decoded += 1
                    t = self.clock(f)
                    if t is None:
                        raise DecodeError(f"the keyframe near t={t_abs - self.start:.3f}s has no timestamp")
                    if f.key_frame or f.pict_type == av.video.frame.PictureType.I:
                        return t, f
                if drained:
                    break
        finally:
            cc.flush_buffers()  # drained, or part-way through a packet: the next keyframe seeks again
            self.it = self.packets = None
        raise DecodeError(f"no keyframe decodes at t={t_abs - self.start:.3f}s")

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
                    self._position(key_abs)
            elif self.it is None or self.pos is None or t - self.pos > gop_s:
                self._position(t)
            hit = self._next_at_or_after(t)
            taken_t = hit[0]
            frames.append(self._rgb(hit[1]))
            stamps.append(hit[0] - self.start)
        return self._result(frames, stamps)

    def keyframes(self, times: np.ndarray) -> Decoded:
        """Each target snapped to the nearest keyframe (ties to the earlier); only keyframes decoded.

        Each keyframe returned is the one the metadata records, at the time it records: a stream that
        disagrees (the keyframe decoded there is another, or none) is this row's :class:`DecodeError`,
        never a stand-in frame."""
        kts = np.asarray(self.plan.keyframe_times, dtype=np.float64)
        idx = nearest_keyframes(kts, times)
        frames: list[np.ndarray] = []
        stamps: list[float] = []
        taken: int | None = None
        for i in idx:
            if taken == int(i):
                frames.append(frames[-1])
                stamps.append(stamps[-1])
                continue
            key_abs = self.start + kts[int(i)]
            t, f = self._keyframe(key_abs)
            if abs(t - key_abs) > self.half:
                raise DecodeError(
                    f"the metadata's keyframe at {kts[int(i)]:.3f}s is not in the stream (the keyframe decoded there "
                    f"is at {t - self.start:.3f}s); describe the video again")
            taken = int(i)
            frames.append(self._rgb(f))
            stamps.append(t - self.start)
        return self._result(frames, stamps)

    def keyframes_unplanned(self, times: np.ndarray) -> Decoded:
        """Without recorded keyframe times: the keyframe at or before each target."""
        frames: list[np.ndarray] = []
        stamps: list[float] = []
        for t in self.start + times:
            kt, f = self._keyframe(t)
            if stamps and kt - self.start == stamps[-1]:
                frames.append(frames[-1])
            else:
                frames.append(self._rgb(f))
            stamps.append(kt - self.start)
        return self._result(frames, stamps)
