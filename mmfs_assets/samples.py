"""Synthetic sample videos made with PyAV (no ffmpeg binary, no network).

Used by ``mmfs demo`` and by the tests. H.264/MP4 output is byte-identical between runs; MKV/WebM is
not (muxer timestamps), so tests compare decoded properties, never hashes of those files.
The frame pattern encodes the frame index in the blue channel so tests can check which frame they got.
"""

from __future__ import annotations

import fractions
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("SVT_LOG", "1")  # silence SVT-AV1's banner

import av  # noqa: E402
import numpy as np  # noqa: E402


@dataclass(frozen=True)
class Spec:
    name: str
    width: int = 160
    height: int = 120
    fps: int = 24
    seconds: float = 2.0
    codec: str = "libx264"
    pix_fmt: str = "yuv420p"
    audio: str | None = None  # "aac", "libopus"
    rotation: int | None = None  # display-matrix rotation, degrees counter-clockwise
    vfr: bool = False  # irregular timestamps (10..50 fps mix)
    gop: int | None = None  # keyframe interval in frames
    keyframes: tuple[int, ...] = ()  # frames forced to be keyframes (besides the first), e.g. an irregular pattern
    packed_b_frames: bool = False  # DivX-style packed B-frames (codec "mpeg4" in an .avi; B-frames via options "bf")
    options: dict = field(default_factory=dict)
    container_options: dict = field(default_factory=dict)


def pattern(i: int, w: int, h: int) -> np.ndarray:
    """A moving gradient with a bouncing white square; the blue channel is ``8 * i mod 256``."""
    y, x = np.mgrid[0:h, 0:w]
    img = np.empty((h, w, 3), np.uint8)
    img[..., 0] = (x * 255 // max(w - 1, 1) + i * 4) % 256
    img[..., 1] = (y * 255 // max(h - 1, 1)) % 256
    img[..., 2] = (i * 8) % 256
    s = max(4, min(w, h) // 6)
    cx = int((w - s) * (0.5 + 0.5 * math.sin(i / 7)))
    cy = int((h - s) * (0.5 + 0.5 * math.cos(i / 11)))
    img[cy : cy + s, cx : cx + s] = 255
    return img


def _vfr_steps_ms(n: int) -> list[int]:
    rng = np.random.default_rng(0)
    return [int(rng.choice([20, 33, 50, 100])) for _ in range(n)]


def write_video(path: Path, spec: Spec) -> Path:
    """Encode ``spec`` to ``path`` and return it."""
    n = int(round(spec.seconds * spec.fps))
    if spec.packed_b_frames:
        return _write_packed_avi(path, spec, n)
    with av.open(str(path), "w", options=dict(spec.container_options)) as out:
        vs = out.add_stream(spec.codec, rate=spec.fps, options=dict(spec.options))
        vs.width, vs.height, vs.pix_fmt = spec.width, spec.height, spec.pix_fmt
        if spec.gop:
            vs.codec_context.gop_size = spec.gop
        if spec.vfr:
            vs.time_base = fractions.Fraction(1, 1000)
            vs.codec_context.time_base = fractions.Fraction(1, 1000)
        if spec.rotation is not None:
            vs.set_display_rotation(spec.rotation)
        audio = None
        if spec.audio:
            audio = out.add_stream(spec.audio, rate=48000)
            audio.layout = "stereo" if spec.audio == "libopus" else "mono"
        t_ms = 0
        steps = _vfr_steps_ms(n) if spec.vfr else []
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(pattern(i, spec.width, spec.height), format="rgb24")
            if spec.vfr:
                frame.pts = t_ms
                frame.time_base = fractions.Fraction(1, 1000)
                t_ms += steps[i]
            else:
                frame.pts = i
            frame = frame.reformat(format=spec.pix_fmt)
            if spec.keyframes:
                frame.pict_type = av.video.frame.PictureType.I if i in spec.keyframes else av.video.frame.PictureType.NONE
            for p in vs.encode(frame):
                out.mux(p)
        for p in vs.encode():
            out.mux(p)
        if audio is not None:
            _write_tone(out, audio, spec.seconds, 2 if spec.audio == "libopus" else 1)
    return path


_VOP = b"\x00\x00\x01\xb6"  # MPEG-4 Part 2 VOP start code; the 2 bits after it: 00 I, 01 P, 10 B, 11 S
_DIVX_PACKED = b"\x00\x00\x01\xb2DivX503b1393p"  # user data of DivX 5 "packed bitstream" files (the trailing p)


def _n_vop(ref: bytes, time_increment_bits: int) -> bytes:
    """A not-coded VOP ("N-VOP", the placeholder a packed-B AVI stores where a reference frame is shown):
    ``ref``'s VOP header up to ``vop_coded``, coded as P with ``vop_coded = 0``, then byte-alignment stuffing."""
    at = ref.index(_VOP) + 4
    bits = "".join(f"{b:08b}" for b in ref[at : at + 8])
    i = 2
    while bits[i] == "1":  # modulo_time_base: one 1 per elapsed second, then a 0
        i += 1
    head = "01" + bits[2 : i + 1 + 1 + time_increment_bits + 1] + "0"  # ... marker, time increment, marker, vop_coded=0
    head += "0" + "1" * (-(len(head) + 1) % 8)  # next_start_code() stuffing: a 0, then 1s to the byte boundary
    return _VOP + int(head, 2).to_bytes(len(head) // 8, "big")


def _write_packed_avi(path: Path, spec: Spec, n: int) -> Path:
    """MPEG-4 Part 2 with DivX-style packed B-frames in AVI, the way DivX 5 / Xvid wrote them for Video for
    Windows (one frame in, one frame out): each reference frame travels in one chunk with the first B-frame
    shown before it, the other B-frames follow in chunks of their own, and an N-VOP takes the reference
    frame's place (``[P B1] [B2] [N]``). The frames are encoded by FFmpeg's ``mpeg4`` encoder (B-frames via
    ``options={"bf": "2"}``), then repacked and muxed chunk by chunk."""
    assert spec.codec == "mpeg4", "packed B-frames exist only in MPEG-4 Part 2"
    with av.open(str(path), "w", format="avi", options=dict(spec.container_options)) as out:
        vs = out.add_stream("mpeg4", rate=spec.fps, options=dict(spec.options))
        vs.width, vs.height, vs.pix_fmt = spec.width, spec.height, spec.pix_fmt
        vs.codec_context.gop_size = spec.gop or 10 * n
        coded: list[bytes] = []  # one VOP per packet, in coding order
        for i in range(n + 1):
            frame = None
            if i < n:
                frame = av.VideoFrame.from_ndarray(pattern(i, spec.width, spec.height), format="rgb24").reformat(format=spec.pix_fmt)
                frame.pts = i
                frame.pict_type = av.video.frame.PictureType.I if i in spec.keyframes else av.video.frame.PictureType.NONE
            coded += [bytes(p) for p in vs.encode(frame)]
        tib = max(1, (vs.codec_context.time_base.denominator - 1).bit_length())  # bits of vop_time_increment
        groups: list[list[bytes]] = []  # a reference frame and the B-frames coded after it
        for vop in coded:
            kind = vop[vop.index(_VOP) + 4] >> 6
            if kind == 2 and groups:
                groups[-1].append(vop)
            else:
                if kind == 0:
                    at = vop.index(_VOP)
                    vop = vop[:at] + _DIVX_PACKED + vop[at:]
                groups.append([vop])
        chunks: list[tuple[bytes, bool]] = []
        for ref, *bs in groups:
            key = ref[ref.index(_VOP) + 4] >> 6 == 0
            if not bs:
                chunks.append((ref, key))
                continue
            chunks.append((ref + bs[0], key))
            chunks += [(b, False) for b in bs[1:]]
            chunks.append((_n_vop(ref, tib), False))
        assert len(chunks) == n, (len(chunks), n)
        for k, (data, key) in enumerate(chunks):
            p = av.Packet(data)
            p.stream = vs
            p.time_base = vs.codec_context.time_base
            p.pts = p.dts = k
            p.is_keyframe = key
            out.mux(p)
    return path


def _write_tone(out, stream, seconds: float, channels: int) -> None:
    sr = 48000
    size = stream.codec_context.frame_size or 1024
    pts = 0
    while pts < int(sr * seconds):
        t = (np.arange(pts, pts + size) / sr).astype(np.float32)
        tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(
            np.repeat(tone[None, :], channels, axis=0), format="fltp", layout="stereo" if channels == 2 else "mono"
        )
        frame.sample_rate = sr
        frame.pts = pts
        for p in stream.encode(frame):
            out.mux(p)
        pts += size
    for p in stream.encode():
        out.mux(p)


def write_audio_only(path: Path, seconds: float = 1.0) -> Path:
    """An AAC-only MP4: a real media file without a video stream."""
    with av.open(str(path), "w", format="mp4") as out:
        s = out.add_stream("aac", rate=48000)
        s.layout = "mono"
        _write_tone(out, s, seconds, 1)
    return path


GOOD_SPECS = [
    Spec("h264_64x64_24fps_1s.mp4", 64, 64, 24, 1.0),
    Spec("h264 320x240 30fps 5s aac.mp4", 320, 240, 30, 5.0, audio="aac", gop=30),  # spaces in the name
    Spec("h264_160x120_25fps_3s_rot90.mp4", 160, 120, 25, 3.0, rotation=90),
    Spec("h264_10bit_128x96_24fps_2s.mp4", 128, 96, 24, 2.0, pix_fmt="yuv420p10le"),
    Spec("hevc_10bit_128x96_24fps_2s.mp4", 128, 96, 24, 2.0, codec="libx265", pix_fmt="yuv420p10le",
         options={"x265-params": "log-level=error"}),
    Spec("vfr_h264_160x120_2s.mkv", 160, 120, 30, 2.0, vfr=True),
    Spec("vp9_160x120_30fps_2s_opus.webm", 160, 120, 30, 2.0, codec="libvpx-vp9", audio="libopus"),
    Spec("mpeg4_176x144_25fps_2s.avi", 176, 144, 25, 2.0, codec="mpeg4"),
    Spec("av1_128x96_24fps_1s.mkv", 128, 96, 24, 1.0, codec="libsvtav1", options={"preset": "12"}),
    Spec("vidéo_ünïcode_«it's».mp4", 96, 64, 24, 1.0, gop=12),  # unicode and a quote
]

# Broken files: name -> what the metadata error mentions (any of these, lower case).
BAD_FILES = {
    "truncated_half.mp4": ("not a readable media file",),
    "truncated_tail.mkv": ("truncated",),
    "truncated_faststart.mp4": ("truncated", "decode failed"),
    "bitflip_middle.mp4": ("decode failed",),
    "garbage.mp4": ("not a readable media file",),
    "zero_bytes.mp4": ("empty file",),
    "audio_only.mp4": ("no video stream (audio-only",),
    "notes_really_text.mp4": ("not a readable media file",),
    # FFmpeg guesses from the name when it has one ("tty"), else finds no format
    "notes.txt": ("not a video", "not a readable media file"),
}


def make_good(outdir: Path, specs=None) -> list[Path]:
    outdir.mkdir(parents=True, exist_ok=True)
    return [write_video(outdir / s.name, s) for s in (specs or GOOD_SPECS)]


def make_bad(outdir: Path, scratch: Path | None = None) -> list[Path]:
    """Write the broken files of :data:`BAD_FILES` into ``outdir`` (deterministic bytes)."""
    outdir.mkdir(parents=True, exist_ok=True)
    scratch = scratch or outdir
    src_path = write_video(scratch / "_src.mp4", Spec("_src.mp4", 320, 240, 30, 5.0, gop=30))
    src = src_path.read_bytes()
    src_path.unlink()
    (outdir / "truncated_half.mp4").write_bytes(src[: len(src) // 2])  # moov at the end is lost
    mkv = write_video(scratch / "_tail.mkv", Spec("_tail.mkv", 160, 120, 24, 3.0))
    b = mkv.read_bytes()
    mkv.unlink()
    (outdir / "truncated_tail.mkv").write_bytes(b[: int(len(b) * 0.6)])
    fs = write_video(scratch / "_fs.mp4", Spec("_fs.mp4", 160, 120, 24, 3.0, container_options={"movflags": "faststart"}))
    b = fs.read_bytes()
    fs.unlink()
    (outdir / "truncated_faststart.mp4").write_bytes(b[: int(len(b) * 0.6)])
    (outdir / "garbage.mp4").write_bytes(np.random.default_rng(1).bytes(4096))
    (outdir / "zero_bytes.mp4").write_bytes(b"")
    flipped = bytearray(src)
    mid = len(flipped) // 3
    flipped[mid : mid + 2000] = np.random.default_rng(2).bytes(2000)
    (outdir / "bitflip_middle.mp4").write_bytes(bytes(flipped))
    write_audio_only(outdir / "audio_only.mp4")
    (outdir / "notes_really_text.mp4").write_text("these are meeting notes, not a video\n" * 20)
    (outdir / "notes.txt").write_text("a plain text file that FFmpeg opens as an 'ansi' video\n" * 20)
    return [outdir / n for n in BAD_FILES]
