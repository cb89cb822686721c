"""Turning decoded uint8 frames into model input tensors, and quieting the model libraries."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def frames_tensor(frames: Sequence[np.ndarray], size: int, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 ``[H, W, 3]`` frames (short side already ``size``) -> centre-cropped, normalised ``[N, 3, size, size]``."""
    out = []
    for f in frames:
        h, w = f.shape[:2]
        if min(h, w) != size:  # the decoder resizes; this covers a caller that did not
            t = torch.from_numpy(np.ascontiguousarray(f)).permute(2, 0, 1)[None].float()
            s = size / min(h, w)
            t = torch.nn.functional.interpolate(t, size=(max(size, round(h * s)), max(size, round(w * s))), mode="bicubic", antialias=True)[0]
        else:
            t = torch.from_numpy(np.ascontiguousarray(f)).permute(2, 0, 1).float()
        h, w = t.shape[1:]
        top, left = (h - size) // 2, (w - size) // 2
        out.append(t[:, top : top + size, left : left + size])
    x = torch.stack(out) / 255.0
    m = torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
    sd = torch.tensor(std, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - m) / sd


def place(model, device: str):
    """The model in eval mode on ``device``: fp16 on CUDA, fp32 elsewhere. Returns (model, dtype name)."""
    half = device.startswith("cuda")
    return (model.half() if half else model.float()).to(device).eval(), ("fp16" if half else "fp32")


def processor_size(size, default: int) -> int:
    """The height (or shortest edge) of a transformers processor size (a dict or a ``SizeDict``)."""
    for key in ("height", "shortest_edge"):
        v = size.get(key) if isinstance(size, dict) else getattr(size, key, None)
        if v:
            return int(v)
    return int(size) if isinstance(size, int) else default


def quiet_transformers() -> None:
    """No download/loading progress bars or info logs from transformers inside asset runs."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
