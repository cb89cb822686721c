"""Training clips: ``frames`` consecutive (or strided) frames at a position drawn from (seed, epoch, row).

A clip of ``frames`` frames with ``stride`` source frames between them spans ``frames * stride / fps``
seconds; its start is drawn uniformly from where the whole window fits (a video shorter than the window
starts at 0 and repeats its last frame). Frames are resized so the short side is ``size`` and, with
``crop`` (the default), centre-cropped to ``size x size`` so clips of any aspect ratio collate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, BinaryIO

import numpy as np

from mmfs_loader.ordering import uniform
from mmfs_loader.video import VideoPlan, decode_at


@dataclass(frozen=True)
class ClipSpec:
    """How to cut a training clip from a video."""

    frames: int = 8
    size: int | None = 224
    stride: int | None = None  # source frames between sampled frames; None = 1 (consecutive)
    crop: bool = True

    def __post_init__(self) -> None:
        if int(self.frames) < 1:
            raise ValueError(f"clip frames must be at least 1, got {self.frames}")
        if self.size is not None and int(self.size) < 2:
            raise ValueError(f"clip size must be at least 2, got {self.size}")
        if self.stride is not None and int(self.stride) < 1:
            raise ValueError(f"clip stride must be at least 1, got {self.stride}")

    @classmethod
    def parse(cls, clip: ClipSpec | Mapping[str, Any] | None) -> ClipSpec | None:
        if clip is None or isinstance(clip, ClipSpec):
            return clip
        unknown = set(clip) - {"frames", "size", "stride", "crop"}
        if unknown:
            raise ValueError(f"unknown clip options {sorted(unknown)} (known: frames, size, stride, crop)")
        return cls(**dict(clip))

    def to_dict(self) -> dict:
        return asdict(self)

    def times(self, plan: VideoPlan, u: float) -> np.ndarray:
        """Frame times (s) for a draw ``u`` in [0, 1)."""
        fps = plan.fps if plan.fps and plan.fps > 0 else 25.0
        step = (self.stride or 1) / fps
        span = self.frames * step
        room = max(0.0, plan.duration_s - span)
        start = u * room
        # Aim at the middle of each frame's display interval, so rounding never lands a frame early.
        return start + (np.arange(self.frames) + 0.5) * step


def draw(seed: int, epoch: int, row_id: int) -> float:
    """The clip position draw of a row in an epoch."""
    return uniform(seed, epoch, 0xC11B, row_id)


def decode_clip(src: str | BinaryIO, plan: VideoPlan, spec: ClipSpec, u: float) -> tuple[np.ndarray, np.ndarray]:
    """uint8 ``[T, C, H, W]`` frames and their times for one video."""
    frames, stamps = decode_at(src, plan, spec.times(plan, u), spec.size)
    if spec.crop and spec.size:
        h, w = frames.shape[1:3]
        top, left = (h - spec.size) // 2, (w - spec.size) // 2
        frames = frames[:, top : top + spec.size, left : left + spec.size]
    return np.ascontiguousarray(frames.transpose(0, 3, 1, 2)), stamps
