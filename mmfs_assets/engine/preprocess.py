"""Model input preprocessing declared as data and run on the model's device, in batches.

A feature declares :class:`Preprocess` (size, crop, mean, std, resample, and for DPT-style models the
"multiple of" rounding) instead of calling a CPU image processor per frame. The engine moves each
batch of uint8 frames to the device once (pinned, non-blocking on CUDA) and resizes, crops and
normalises there: the CPU work per frame is gone from the thread that feeds the accelerator.

The arithmetic follows the processors it replaces (open_clip's transform, transformers'
``CLIPImageProcessor`` and ``DPTImageProcessor``); ``tests/test_preprocess.py`` checks the values
against them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where frames are processed, not when features are declared
    import torch


@dataclass(frozen=True)
class Preprocess:
    """How uint8 RGB frames become model input.

    - ``size``: the short side after resizing (``multiple_of`` unset), or DPT's target square.
    - ``crop``: centre-crop ``size x size`` after the resize.
    - ``multiple_of``: DPT ``keep_aspect_ratio`` resizing: the scale closest to 1 of ``size/h`` and
      ``size/w`` is applied to both sides, each rounded to a multiple of this.
    """

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop: bool = True
    resample: str = "bicubic"
    multiple_of: int | None = None

    def decode_short_side(self) -> int:
        """The short side the decoder should scale to (so the device resize is small or nothing)."""
        return self.size

    def target(self, h: int, w: int) -> tuple[int, int]:
        """(height, width) after the resize, before the crop."""
        if self.multiple_of:
            sh, sw = self.size / h, self.size / w
            s = sw if abs(1 - sw) < abs(1 - sh) else sh
            m = self.multiple_of
            return max(m, round(s * h / m) * m), max(m, round(s * w / m) * m)
        s = self.size / min(h, w)
        return (self.size, max(self.size, round(w * s))) if h <= w else (max(self.size, round(h * s)), self.size)


def to_device(frames: torch.Tensor, device: str) -> torch.Tensor:
    """One batch of frames onto ``device``: pinned and non-blocking from the CPU to CUDA."""
    if frames.device.type == "cpu" and str(device).startswith("cuda"):
        return (frames if frames.is_pinned() else frames.pin_memory()).to(device, non_blocking=True)
    return frames.to(device)


def pixels(frames: torch.Tensor, p: Preprocess, device: str, dtype: torch.dtype) -> torch.Tensor:
    """uint8 ``[N, H, W, 3]`` frames (any device) -> normalised ``[N, 3, h, w]`` on ``device`` in ``dtype``."""
    import torch

    x = to_device(frames, device).permute(0, 3, 1, 2).float()
    h, w = x.shape[-2:]
    th, tw = p.target(h, w)
    if (th, tw) != (h, w):
        x = torch.nn.functional.interpolate(x, size=(th, tw), mode=p.resample, antialias=True, align_corners=False)
        x = x.round().clamp_(0, 255)  # the CPU processors resize uint8 images
    if p.crop:
        top, left = (th - p.size) // 2, (tw - p.size) // 2
        x = x[:, :, top : top + p.size, left : left + p.size]
    mean = torch.tensor(p.mean, device=x.device).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(p.std, device=x.device).view(1, 3, 1, 1) * 255.0
    return ((x - mean) / std).to(dtype).contiguous()
