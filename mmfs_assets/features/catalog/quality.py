"""A cheap CPU feature: per-video sharpness and motion from a few sampled frames (no model).

- ``sharpness``: mean over frames of the variance of the Laplacian of the grey image (blurry -> low).
- ``motion``: mean absolute difference between consecutive sampled frames, in grey levels (static -> 0).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from mmfs_assets.features.spec import Clip, Feature, Model, ModelContext
from mmfs_loader.contract.schema import ColumnGroup

GROUP = ColumnGroup("quality", (pa.field("sharpness", pa.float32()), pa.field("motion", pa.float32())))
CODE_VERSION = "quality-v1"
SHORT_SIDE = 128


def _grey(frames: np.ndarray) -> np.ndarray:
    return frames.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


def scores(clip: Clip) -> tuple[float, float]:
    g = _grey(clip.frames)  # [K, H, W]
    lap = g[:, 1:-1, :-2] + g[:, 1:-1, 2:] + g[:, :-2, 1:-1] + g[:, 2:, 1:-1] - 4 * g[:, 1:-1, 1:-1]
    sharp = float(lap.reshape(len(g), -1).var(axis=1).mean()) if lap.size else 0.0
    motion = float(np.abs(np.diff(g, axis=0)).mean()) if len(g) > 1 else 0.0
    return sharp, motion


def _compute(net: None, clips: Sequence[Clip]) -> dict[str, list]:
    pairs = [scores(c) for c in clips]
    return {"sharpness": [p[0] for p in pairs], "motion": [p[1] for p in pairs]}


def _load(ctx: ModelContext) -> Model:
    return Model("numpy-laplacian-absdiff", "none", _compute, short_side=SHORT_SIDE)


FEATURE = Feature(
    name="quality",
    group=GROUP,
    code_version=CODE_VERSION,
    setting="MMFS_QUALITY",
    default_model="numpy",
    load=_load,
    description="Sharpness (variance of the Laplacian) and motion (mean frame difference) from 8 sampled frames; CPU only.",
    frames=8,
    batch_size=16,
    uses_gpu=False,
)
