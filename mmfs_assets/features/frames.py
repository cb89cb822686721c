"""Decoding the frames a feature needs: ``K`` frames at the centres of ``K`` equal slices of the video.

The decoding itself (planned seeks, FFmpeg scaling, rotation) is :mod:`mmfs_loader.video`, shared with
the training loader.
"""

from __future__ import annotations

from typing import BinaryIO

from mmfs_assets.features.spec import Clip, FrameRequest
from mmfs_loader.video import DecodeError, VideoPlan, decode_at, output_size

__all__ = ["DecodeError", "VideoPlan", "decode_clip", "output_size"]


def decode_clip(src: str | BinaryIO, rowid: int, plan: VideoPlan, req: FrameRequest) -> Clip:
    """Decode ``req.count`` frames of one video (a path or a seekable file such as a Lance blob)."""
    frames, stamps = decode_at(src, plan, plan.targets(req.count), req.short_side)
    return Clip(rowid=rowid, frames=frames, timestamps=stamps)
