"""Video metadata from the bytes themselves, with PyAV.

Headers lie (MKV/WebM carry no frame count, truncated files keep their full duration, a text file opens
as an ``ansi`` "video"), so the probe decodes every frame of the first video stream: the frame count is
the number of frames that decode, fps and VFR come from the decoded timestamps, the keyframe interval
from the decoded key flags, rotation from the display matrix on the first frame. Decoding without
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
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import av
import numpy as np

# Demuxers/codecs that open but are not video: text rendered as a "video", still images.
NOT_VIDEO_FORMATS = {"tty", "image2", "png_pipe", "jpeg_pipe", "webp_pipe", "gif_pipe", "bmp_pipe", "svg_pipe"}
NOT_VIDEO_CODECS = {"ansi", "bintext", "xbin", "idf", "png", "bmp", "svg"}
# A decoded span shorter than this fraction of the header duration (minus slack) counts as truncated.
TRUNCATION_FRACTION = 0.9
TRUNCATION_SLACK_S = 0.25


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


def probe_video(src: str | BinaryIO, size_bytes: int | None = None, max_corrupt_frames: int = 0) -> ProbeResult:
    """Describe one video; ``src`` is a path or a seekable binary file (e.g. a Lance ``BlobFile``)."""
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
        header_dur = _header_duration(container, v)
        # One thread per video: with frame threading FFmpeg's corrupt flags are racy (a frame with one
        # concealed macroblock is flagged in some runs, not others); probes run in a pool, one per core.
        v.thread_type = "NONE"
        tb = v.time_base
        pts: list[float] = []
        keys: list[bool] = []
        rotation = 0
        decode_error = None
        packets = corrupt = 0
        try:
            for packet in container.demux(v):
                if packet.size:  # the final flush packet is empty
                    packets += 1
                for frame in packet.decode():
                    if not pts:
                        rotation = int(round(frame.rotation or 0)) % 360
                        r.values["width"] = r.values["width"] or frame.width
                        r.values["height"] = r.values["height"] or frame.height
                        r.values["pix_fmt"] = r.values["pix_fmt"] or frame.format.name
                    t = frame.time if frame.time is not None else (float(frame.pts * tb) if frame.pts is not None else None)
                    pts.append(t if t is not None else (pts[-1] if pts else 0.0))
                    keys.append(bool(frame.key_frame))
                    corrupt += bool(frame.is_corrupt)
        except av.error.FFmpegError as e:
            decode_error = f"decode failed after {len(pts)} frames: {e.strerror or e}"
        except Exception as e:  # noqa: BLE001
            decode_error = f"decode failed after {len(pts)} frames: {type(e).__name__}: {e}"
        n = len(pts)
        r.values["num_frames"] = n
        r.values["rotation"] = rotation
        r.values["corrupt_frames"] = corrupt
        r.values["lost_frames"] = max(0, packets - n) if decode_error is None else None
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
