"""Which decoder makes a loader's clips: FFmpeg on the CPU, or NVDEC on the GPU (``Reading(decoder=...)``).

- ``cpu``: PyAV/FFmpeg in the reading process (a DataLoader worker, or the main process), frames
  scaled by FFmpeg; clips come out as CPU tensors.
- ``nvdec``: the GPU's decoder through PyNvVideoCodec (:mod:`mmfs_loader.decode.nvdec`); frames stay on the
  GPU, are scaled and cropped there (:func:`fit_frames`), and clips come out as CUDA tensors. Videos
  NVDEC refuses (variable frame rate, a codec or size it does not take) are decoded on the CPU and
  moved to the GPU, so a batch is on one device. Fails at construction where NVDEC is not available.
- ``auto`` (the default): NVDEC when PyNvVideoCodec and CUDA are present and the clips are read in the
  main process (``num_workers=0``); in DataLoader workers the CPU decodes, as each worker would
  otherwise hold a CUDA context of its own and hand its frames across processes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from mmfs_loader.decode.nvdec import nvdec_available
from mmfs_loader.decode.video import output_size

CLIP_DECODERS = ("auto", "cpu", "nvdec")


def check_clip_decoder(pref: str, *, probe: Callable[[], str | None] = nvdec_available) -> None:
    """Refuse an unknown setting, or ``nvdec`` where NVDEC cannot run (at construction, not in a worker)."""
    if pref not in CLIP_DECODERS:
        raise ValueError(f"decoder={pref!r}: choose one of {', '.join(CLIP_DECODERS)}")
    if pref == "nvdec":
        why_not = probe()
        if why_not is not None:
            raise ValueError(f"decoder='nvdec' but {why_not}; use decoder='auto' or 'cpu'")


def use_nvdec(pref: str, *, in_worker: bool, probe: Callable[[], str | None] = nvdec_available) -> bool:
    """Whether this reading process decodes clips with NVDEC."""
    if pref == "cpu" or (pref == "auto" and in_worker):
        return False
    return probe() is None


def fit_frames(frames: torch.Tensor, size: int | None, crop: bool) -> torch.Tensor:
    """uint8 ``[K, H, W, 3]`` frames (on any device) -> ``[K, 3, h, w]``: the short side scaled to ``size``
    (even sizes, as the CPU path makes them) with antialiased bilinear filtering, then centre-cropped to
    ``size x size`` when ``crop``. What FFmpeg does for the CPU path, done where the frames are."""
    x = frames.permute(0, 3, 1, 2)
    if size:
        h, w = x.shape[2], x.shape[3]
        ow, oh = output_size(w, h, size)  # the CPU path's size, long side bounded (MAX_SCALED_ASPECT)
        if (oh, ow) != (h, w):
            x = torch.nn.functional.interpolate(x.float(), size=(oh, ow), mode="bilinear", antialias=True, align_corners=False)
            x = x.round_().clamp_(0, 255).to(torch.uint8)
        if crop:
            top, left = (x.shape[2] - size) // 2, (x.shape[3] - size) // 2
            x = x[:, :, top : top + size, left : left + size]
    return x.contiguous()
