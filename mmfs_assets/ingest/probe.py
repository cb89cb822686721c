"""Video metadata from the bytes themselves, with PyAV.

Headers lie (MKV/WebM carry no frame count, truncated files keep their full duration, a text file opens
as an ``ansi`` "video"), so the probe decodes every frame of the first video stream: the frame count is
the number of frames that decode, fps and VFR come from the decoded frames' presentation times
(:class:`mmfs_loader.decode.video.FrameClock`: their pts, except in MPEG-4 Part 2 AVI files with packed B-frames,
where the pts FFmpeg gives decoded frames are permuted), the keyframe interval and times from the decoded key flags, rotation from the display matrix on the first frame. Decoding without
colour conversion is the cheap part of decoding; it is what makes the metadata trustworthy and what
finds bit-flipped or truncated files.

A bad file never raises: the result carries an ``error`` string and whatever values were known.

Damage that FFmpeg conceals is counted too: a few bytes flipped inside the compressed frames do not stop
the decoder, it hides the broken macroblocks (error concealment) and goes on. ``corrupt_frames`` counts
frames FFmpeg flags as concealed or corrupt (``AVFrame.decode_error_flags`` / ``AV_FRAME_FLAG_CORRUPT``,
PyAV's ``frame.is_corrupt``), ``lost_frames`` the packets that produced no frame. Above
``max_corrupt_frames`` (setting ``MMFS_MAX_CORRUPT_FRAMES``, default 0) the video is quarantined with a
``metadata_error`` saying so. Each video decodes on one thread (``NONE``): frame threading makes the
flags racy and slice threading disables H.264's error concealment (measured: 24/24 and 23/24 damaged
H.264 files found, 12/12 at 720p, no false positive on 18 clean files; HEVC hides most damage).

Frame dimensions are bounded too (:class:`FrameLimits`): what a video costs downstream grows with its frame
size and, above all, its shape. A valid 72 KB H.264 file of 16384x2 pixels scaled so its short side is a
model's input size becomes a 573440x70 frame (a depth fill at 7.5 GB, past 300 s). A video whose side,
pixel count or aspect ratio (long side / short side) is beyond ``MMFS_MAX_FRAME_SIDE``,
``MMFS_MAX_FRAME_PIXELS`` or ``MMFS_MAX_ASPECT_RATIO`` is quarantined with a ``metadata_error`` naming the
value, the limit and the setting (``frame size 16384x2: aspect ratio 8192:1 exceeds MMFS_MAX_ASPECT_RATIO=10``).
The header's size is checked before anything is decoded; every decoded frame is checked too (a stream
may change resolution mid-way), and decoding stops at the first frame beyond the limits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import av
import numpy as np

from mmfs_loader.decode.video import FrameClock

# Demuxers/codecs that open but are not video: text rendered as a "video", still images.
NOT_VIDEO_FORMATS = {"tty", "image2", "png_pipe", "jpeg_pipe", "webp_pipe", "gif_pipe", "bmp_pipe", "svg_pipe"}
NOT_VIDEO_CODECS = {"ansi", "bintext", "xbin", "idf", "png", "bmp", "svg"}
# A decoded span shorter than this fraction of the header duration (minus slack) counts as truncated.
TRUNCATION_FRACTION = 0.9
TRUNCATION_SLACK_S = 0.25

# Default frame limits (settings MMFS_MAX_FRAME_SIDE, MMFS_MAX_FRAME_PIXELS, MMFS_MAX_ASPECT_RATIO).
# - Side 16384 and 16384^2 pixels: the top levels of H.264, HEVC and AV1 stop at 8192x4352-class pictures
#   (35.7 Mpx), but 16K VR/360 masters (15360x7680) exist and a 16000x16000 H.264 file probes and decodes
#   to a model's size in bounded memory (measured: 1.2 GB peak for the probe, 1.3 GB for a decode to a
#   518 px short side, one process; the decoder holds a few native frames of 1.5 bytes per pixel in 8-bit
#   4:2:0), so the defaults refuse only what no encoder targets. Lower MMFS_MAX_FRAME_PIXELS where decode
#   workers have less memory than that.
# - Aspect ratio 10:1: the widest real formats are far inside it (Ultra Panavision 2.76:1, 32:9 monitors
#   3.56:1, triple-monitor 48:9 5.33:1, 6:1 cubemap strips; portrait video is the same ratios turned).
#   Past it lie banners, line scans and hostile files (16384x2 is 8192:1), which a model sees as noise:
#   scaled to the model's short side such a frame is the thing that costs gigabytes.
DEFAULT_MAX_FRAME_SIDE = 16384
DEFAULT_MAX_FRAME_PIXELS = 16384 * 16384
DEFAULT_MAX_ASPECT_RATIO = 10.0


def _num(x: float) -> str:
    """A limit or ratio as people write it: ``10``, ``2.5``, ``8192``."""
    return f"{x:.6g}" if isinstance(x, float) else str(x)


@dataclass(frozen=True)
class FrameLimits:
    """What one video's frames may measure before it is quarantined (the ``max_*`` settings of the same
    names: ``MMFS_MAX_FRAME_SIDE``, ``MMFS_MAX_FRAME_PIXELS``, ``MMFS_MAX_ASPECT_RATIO``)."""

    max_frame_side: int = DEFAULT_MAX_FRAME_SIDE
    max_frame_pixels: int = DEFAULT_MAX_FRAME_PIXELS
    max_aspect_ratio: float = DEFAULT_MAX_ASPECT_RATIO

    def __post_init__(self) -> None:
        if int(self.max_frame_side) < 1 or int(self.max_frame_pixels) < 1:
            raise ValueError(f"frame limits must be at least 1: {self}")
        if not float(self.max_aspect_ratio) >= 1:
            raise ValueError(f"max_aspect_ratio must be at least 1, not {self.max_aspect_ratio}")
        object.__setattr__(self, "max_frame_side", int(self.max_frame_side))
        object.__setattr__(self, "max_frame_pixels", int(self.max_frame_pixels))
        object.__setattr__(self, "max_aspect_ratio", float(self.max_aspect_ratio))

    @classmethod
    def of(cls, config: Any) -> FrameLimits:
        """The limits of anything with the three settings as attributes (``Settings``, ``ProbeResource``)."""
        return cls(config.max_frame_side, config.max_frame_pixels, config.max_aspect_ratio)

    def details(self) -> dict[str, str]:
        """As ``LoadedModel.details`` / producer fields: ``{"max_frame_side": "16384", ...}``."""
        return {"max_frame_side": str(self.max_frame_side), "max_frame_pixels": str(self.max_frame_pixels),
                "max_aspect_ratio": _num(self.max_aspect_ratio)}

    @classmethod
    def from_details(cls, details: Mapping[str, str]) -> FrameLimits:
        """Back from :meth:`details` (missing keys: the defaults)."""
        d = cls()
        return cls(int(details.get("max_frame_side", d.max_frame_side)),
                   int(details.get("max_frame_pixels", d.max_frame_pixels)),
                   float(details.get("max_aspect_ratio", d.max_aspect_ratio)))

    def violation(self, width: int, height: int) -> str | None:
        """Every limit a ``width x height`` frame breaks (``aspect ratio 8192:1 exceeds
        MMFS_MAX_ASPECT_RATIO=10``), or None when it is within them (or its size is unknown)."""
        if width <= 0 or height <= 0:
            return None  # unknown: the decoded frames are checked
        why = []
        if max(width, height) > self.max_frame_side:
            side = "width" if width >= height else "height"
            why.append(f"{side} {max(width, height)} exceeds MMFS_MAX_FRAME_SIDE={self.max_frame_side}")
        if width * height > self.max_frame_pixels:
            why.append(f"{width * height} pixels exceed MMFS_MAX_FRAME_PIXELS={self.max_frame_pixels}")
        ratio = max(width, height) / min(width, height)
        if ratio > self.max_aspect_ratio:
            why.append(f"aspect ratio {_num(ratio)}:1 exceeds MMFS_MAX_ASPECT_RATIO={_num(self.max_aspect_ratio)}")
        return "; ".join(why) or None


DEFAULT_LIMITS = FrameLimits()


class _OutOfBounds(Exception):
    """A decoded frame is beyond the frame limits."""


@dataclass
class ProbeResult:
    values: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def _fail(result: ProbeResult, msg: str) -> ProbeResult:
    result.error = msg
    return result


def _header_duration(container, stream) -> float | None:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    return None


def probe_video(
    src: str | BinaryIO, size_bytes: int | None = None, max_corrupt_frames: int = 0, *, limits: FrameLimits | None = None,
) -> ProbeResult:
    """Describe one video; ``src`` is a path or a seekable binary file (e.g. a Lance ``BlobFile``).

    ``limits``: the frame size quarantine (default :data:`DEFAULT_LIMITS`, the settings' defaults)."""
    limits = limits or DEFAULT_LIMITS
    r = ProbeResult()
    if size_bytes == 0:
        return _fail(r, "empty file (0 bytes)")
    try:
        container = av.open(src, metadata_errors="ignore")
    except av.error.FFmpegError as e:
        return _fail(r, f"not a readable media file (FFmpeg: {e.strerror or e})")
    except Exception as e:  # noqa: BLE001 - any failure to open is this file's problem, not the run's
        return _fail(r, f"cannot open: {type(e).__name__}: {e}")
    with container:
        fmt = container.format.name
        r.values["container"] = fmt
        videos = [s for s in container.streams if s.type == "video"]
        has_audio = any(s.type == "audio" for s in container.streams)
        r.values["has_audio"] = has_audio
        if not videos:
            kind = "audio-only file" if has_audio else "no streams"
            return _fail(r, f"no video stream ({kind}, format {fmt})")
        v = videos[0]
        cc = v.codec_context
        codec = getattr(v.codec, "canonical_name", None) or cc.name  # "av1", not the decoder "libdav1d"
        if fmt in NOT_VIDEO_FORMATS or codec in NOT_VIDEO_CODECS or cc.name in NOT_VIDEO_CODECS:
            return _fail(r, f"not a video: format {fmt!r}, codec {codec!r}")
        r.values.update(
            codec=codec,
            width=int(cc.width) or None,
            height=int(cc.height) or None,
            pix_fmt=cc.pix_fmt,
        )
        checked = (int(cc.width), int(cc.height))
        if (why := limits.violation(*checked)) is not None:  # before one frame is decoded
            return _fail(r, f"frame size {checked[0]}x{checked[1]}: {why}")
        header_dur = _header_duration(container, v)
        # One thread per video: with frame threading FFmpeg's corrupt flags are racy (a frame with one
        # concealed macroblock is flagged in some runs, not others); probes run in a pool, one per core.
        v.thread_type = "NONE"
        clock = FrameClock(container, v)  # the frames' presentation times (not their pts in MPEG-4 AVI)
        pts: list[float] = []
        keys: list[bool] = []
        rotation = 0
        decode_error = size_error = None
        packets = corrupt = 0
        try:
            for packet in container.demux(v):
                if packet.size:  # the final flush packet is empty
                    packets += 1
                for frame in packet.decode():
                    if (frame.width, frame.height) != checked:  # the first frame, or a resolution change
                        checked = (frame.width, frame.height)
                        if (why := limits.violation(*checked)) is not None:
                            at = f" changes at decoded frame {len(pts)} to" if pts else ""
                            raise _OutOfBounds(f"frame size{at} {checked[0]}x{checked[1]}: {why}")
                    if not pts:
                        rotation = int(round(frame.rotation or 0)) % 360
                        r.values["width"] = r.values["width"] or frame.width
                        r.values["height"] = r.values["height"] or frame.height
                        r.values["pix_fmt"] = r.values["pix_fmt"] or frame.format.name
                    t = clock(frame)
                    pts.append(t if t is not None else (pts[-1] if pts else 0.0))
                    keys.append(bool(frame.key_frame))
                    corrupt += bool(frame.is_corrupt)
        except _OutOfBounds as e:  # decoding stops at the first frame beyond the limits
            size_error = str(e)
        except av.error.FFmpegError as e:
            decode_error = f"decode failed after {len(pts)} frames: {e.strerror or e}"
        except Exception as e:  # noqa: BLE001
            decode_error = f"decode failed after {len(pts)} frames: {type(e).__name__}: {e}"
        n = len(pts)
        r.values["num_frames"] = n
        r.values["rotation"] = rotation
        r.values["corrupt_frames"] = corrupt
        r.values["lost_frames"] = max(0, packets - n) if decode_error is None and size_error is None else None
        if size_error is not None:
            return _fail(r, size_error)
        if n == 0:
            return _fail(r, decode_error or "no decodable video frames")
        _timing(r, np.asarray(pts, dtype=np.float64), keys, v)
        bit_rate = cc.bit_rate or container.bit_rate
        if not bit_rate and size_bytes and r.values.get("duration_s"):
            bit_rate = int(size_bytes * 8 / r.values["duration_s"])
        r.values["bit_rate"] = int(bit_rate) if bit_rate else None
        if decode_error:
            return _fail(r, decode_error)
        span = r.values["duration_s"]
        if header_dur and span < TRUNCATION_FRACTION * header_dur - TRUNCATION_SLACK_S:
            return _fail(r, f"truncated: {n} frames decode, spanning {span:.2f} s of the {header_dur:.2f} s the header declares")
        damaged = corrupt + r.values["lost_frames"]
        if damaged > max_corrupt_frames:
            return _fail(
                r,
                f"damaged: {corrupt} of {n} decoded frames concealed or corrupt, {r.values['lost_frames']} "
                f"packets without a frame (more than MMFS_MAX_CORRUPT_FRAMES={max_corrupt_frames})",
            )
    return r


def _timing(r: ProbeResult, pts: np.ndarray, keys: list[bool], stream) -> None:
    """fps, duration, VFR flag and keyframe interval from decoded timestamps."""
    n = len(pts)
    order = np.sort(pts)
    deltas = np.diff(order)
    deltas = deltas[deltas > 0]
    nominal = stream.average_rate or stream.guessed_rate or stream.base_rate
    if len(deltas):
        step = float(np.median(deltas))
        span = float(order[-1] - order[0])
        fps = (n - 1) / span if span > 0 else (float(nominal) if nominal else None)
        is_vfr = bool((deltas.max() - deltas.min()) > 0.1 * step + 1e-4)
        duration = span + (1.0 / fps if fps else step)
    else:
        fps = float(nominal) if nominal else None
        is_vfr = False
        duration = 1.0 / fps if fps else 0.0
    r.values["fps"] = float(fps) if fps and math.isfinite(fps) else None
    r.values["duration_s"] = float(duration)
    r.values["is_vfr"] = is_vfr
    key_idx = [i for i, k in enumerate(keys) if k]
    start = float(stream.start_time * stream.time_base) if stream.start_time is not None and stream.time_base else 0.0
    r.values["keyframe_times"] = sorted({float(pts[i]) - start for i in key_idx})
    r.values["keyframe_interval"] = float(np.mean(np.diff(key_idx))) if len(key_idx) > 1 else float(n)
