"""Model input preprocessing declared as data and run on the model's device, in batches.

A feature declares :class:`Preprocess` (size, crop, mean, std, resample, and for DPT-style models the
"multiple of" rounding) instead of calling a CPU image processor per frame. The engine moves each
batch of uint8 frames to the device once (pinned, non-blocking on CUDA) and resizes, crops and
normalises there: the CPU work per frame is gone from the thread that feeds the accelerator.

The arithmetic follows the processors it replaces (open_clip's transform, transformers'
``CLIPImageProcessor`` and ``DPTImageProcessor``); ``tests/test_preprocess.py`` checks the values
against them.

Every resize is bounded: no side of a model input is longer than
:data:`~mmfs_loader.decode.video.MAX_SCALED_ASPECT` (16) times the model's size, so one frame costs at most 16
times the model's nominal input, whatever the video's shape (unbounded, a 573440x70 frame stayed
573440x70 under DPT's rounding, and a native 16384x16 frame became 65536x64 for a 64 px CLIP). Frames
more elongated than that are squashed along their long side, the way the decoders make them
(:func:`mmfs_loader.decode.video.output_size`); the metadata probe quarantines such videos by default
(``MMFS_MAX_ASPECT_RATIO``), so this bounds what a raised limit, or a frame the probe never saw, can cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from mmfs_loader.decode.video import MAX_SCALED_ASPECT

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

    def max_side(self) -> int:
        """The longest side a resize may produce: :data:`~mmfs_loader.decode.video.MAX_SCALED_ASPECT` x ``size``
        (a multiple of ``multiple_of``). The per-row compute bound: one frame's model input is at most
        that many times the model's nominal ``size x size``, whatever the video's shape."""
        cap = MAX_SCALED_ASPECT * self.size
        return max(self.multiple_of, cap // self.multiple_of * self.multiple_of) if self.multiple_of else cap

    def target(self, h: int, w: int) -> tuple[int, int]:
        """(height, width) after the resize, before the crop; a side longer than :meth:`max_side` is
        squashed to it (frames more elongated than the decoders make them, e.g. NVDEC's native frames)."""
        cap = self.max_side()
        if self.multiple_of:
            sh, sw = self.size / h, self.size / w
            s = sw if abs(1 - sw) < abs(1 - sh) else sh
            m = self.multiple_of
            return min(cap, max(m, round(s * h / m) * m)), min(cap, max(m, round(s * w / m) * m))
        s = self.size / min(h, w)
        if h <= w:
            return self.size, min(cap, max(self.size, round(w * s)))
        return min(cap, max(self.size, round(h * s))), self.size


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
