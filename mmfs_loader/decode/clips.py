"""Training clips: ``frames`` consecutive (or strided) frames at a position drawn from (seed, epoch, row)
(the draw: :func:`mmfs_loader.reads.ordering.clip_draw`).

A clip of ``frames`` frames with ``stride`` source frames between them spans ``frames * stride / fps``
seconds; its start is drawn uniformly from where the whole window fits (a video shorter than the window
starts at 0 and repeats its last frame). With ``align="keyframe"`` the start is drawn among the
keyframes where the window fits instead: decoding then starts at the clip's first frame, where an
unaligned start decodes on average half a GOP of frames nobody asked for before it (on 1 s GOPs at
30 fps and 8-frame clips, about 23 frames decoded for 8 kept). Rows without recorded keyframe times
fall back to the unaligned draw. Frames are resized so the short side is ``size`` and, with
``crop`` (the default), centre-cropped to ``size x size`` so clips of any aspect ratio collate.

A clip's size is bounded whatever the video's shape: the long side is at most
:data:`~mmfs_loader.decode.video.MAX_SCALED_ASPECT` (16) times ``size`` (a more elongated frame is squashed
along its long side, :func:`~mmfs_loader.decode.video.output_size`), so a 16384x2 video makes a
``size x 16 size`` frame at most, never a ``size x 8192 size`` one. Such videos are quarantined by the
metadata probe by default (``MMFS_MAX_ASPECT_RATIO``) and left out unless ``include_quarantined``;
``size=None`` decodes native frames, bounded only by the probe's ``MMFS_MAX_FRAME_PIXELS``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, BinaryIO

import numpy as np

from mmfs_loader.decode.video import VideoPlan, decode_at

ALIGNMENTS = ("exact", "keyframe")


@dataclass(frozen=True)
class ClipSpec:
    """How to cut a training clip from a video."""

    frames: int = 8
    size: int | None = 224
    stride: int | None = None  # source frames between sampled frames; None = 1 (consecutive)
    crop: bool = True
    align: str = "exact"  # "keyframe": clips start on a keyframe (see the module docstring)

    def __post_init__(self) -> None:
        if int(self.frames) < 1:
            raise ValueError(f"clip frames must be at least 1, got {self.frames}")
        if self.size is not None and int(self.size) < 2:
            raise ValueError(f"clip size must be at least 2, got {self.size}")
        if self.stride is not None and int(self.stride) < 1:
            raise ValueError(f"clip stride must be at least 1, got {self.stride}")
        if self.align not in ALIGNMENTS:
            raise ValueError(f"clip align must be one of {ALIGNMENTS}, got {self.align!r}")

    @property
    def fixed_shape(self) -> bool:
        """Every clip is ``[frames, 3, size, size]`` (cropped to a size): clips stack into one batch tensor.
        Otherwise each keeps its video's aspect ratio (or native size) and a batch holds a list of them."""
        return bool(self.crop and self.size)

    @classmethod
    def parse(cls, clip: ClipSpec | Mapping[str, Any] | None) -> ClipSpec | None:
        if clip is None or isinstance(clip, ClipSpec):
            return clip
        unknown = set(clip) - {"frames", "size", "stride", "crop", "align"}
        if unknown:
            raise ValueError(f"unknown clip options {sorted(unknown)} (known: frames, size, stride, crop, align)")
        return cls(**dict(clip))

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["align"] == "exact":  # recipes written before alignment existed keep their fingerprints
            del d["align"]
        return d

    def times(self, plan: VideoPlan, u: float) -> np.ndarray:
        """Frame times (s) for a draw ``u`` in [0, 1)."""
        fps = plan.fps if plan.fps and plan.fps > 0 else 25.0
        step = (self.stride or 1) / fps
        span = self.frames * step
        room = max(0.0, plan.duration_s - span)
        start = u * room
        if self.align == "keyframe" and plan.keyframe_times:
            kts = np.asarray(plan.keyframe_times, dtype=np.float64)
            fits = kts[kts <= room + 1e-9]
            start = float(fits[min(len(fits) - 1, int(u * len(fits)))]) if len(fits) else float(kts[0])
        # Aim at the middle of each frame's display interval, so rounding never lands a frame early.
        return start + (np.arange(self.frames) + 0.5) * step


def decode_clip(src: str | BinaryIO, plan: VideoPlan, spec: ClipSpec, u: float) -> tuple[np.ndarray, np.ndarray]:
    """uint8 ``[T, C, H, W]`` frames and their times for one video."""
    frames, stamps = decode_at(src, plan, spec.times(plan, u), spec.size)
    if spec.crop and spec.size:
        h, w = frames.shape[1:3]
        top, left = (h - spec.size) // 2, (w - spec.size) // 2
        frames = frames[:, top : top + spec.size, left : left + spec.size]
    return np.ascontiguousarray(frames.transpose(0, 3, 1, 2)), stamps
