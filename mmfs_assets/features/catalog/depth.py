"""Depth maps (Depth Anything V2 through transformers) for K sampled frames of each video.

Each frame's relative depth is predicted at the model's working resolution (518 on the short side for
the real model) and stored losslessly at 16 bits: one PNG per frame plus its value range and timestamp
(see :mod:`mmfs_loader.depth`, whose :func:`~mmfs_loader.depth.decode_depth` reads it back).

``MMFS_DEPTH_MODEL`` is a hub id (default ``depth-anything/Depth-Anything-V2-Small-hf``) or a local
directory with ``config.json``, ``model.safetensors`` and ``preprocessor_config.json``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa

from mmfs_assets.features.models import hf_identity
from mmfs_assets.features.spec import Clip, Feature, FrameRequest, LoadedModel, ModelContext
from mmfs_loader import depth as D
from mmfs_loader.schema import ColumnGroup

CODE_VERSION = "depth-v1"
DEFAULT_FRAMES = 4
GROUP = ColumnGroup(
    "depth",
    (
        pa.field(D.PNG, pa.list_(pa.binary())),
        pa.field(D.MIN, pa.list_(pa.float32())),
        pa.field(D.MAX, pa.list_(pa.float32())),
        pa.field(D.TIMESTAMPS, pa.list_(pa.float64())),
    ),
)
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def build_tiny(directory: Path) -> None:
    """A 4-layer DINOv2 backbone + DPT head, random init (seed 0), with a 70-px DPT processor."""
    import torch
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config, DPTImageProcessor

    from mmfs_assets.features.torch_frames import quiet_transformers

    quiet_transformers()
    torch.manual_seed(0)
    backbone = Dinov2Config(
        hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64, patch_size=14,
        image_size=70, out_features=["stage1", "stage2", "stage3", "stage4"], reshape_hidden_states=False,
    )
    cfg = DepthAnythingConfig(
        backbone_config=backbone, patch_size=14, reassemble_hidden_size=32,
        neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16, head_hidden_size=8,
    )
    DepthAnythingForDepthEstimation(cfg).eval().save_pretrained(directory)
    DPTImageProcessor(
        size={"height": 70, "width": 70}, keep_aspect_ratio=True, ensure_multiple_of=14, resample=3,
        do_pad=False, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD,
    ).save_pretrained(directory)


def _load(ctx: ModelContext) -> LoadedModel:
    import torch
    from transformers import AutoImageProcessor, AutoModelForDepthEstimation

    from mmfs_assets.features.torch_frames import place, processor_size, quiet_transformers

    quiet_transformers()
    model = AutoModelForDepthEstimation.from_pretrained(ctx.spec)
    proc = AutoImageProcessor.from_pretrained(ctx.spec)
    model_id, weights = hf_identity(ctx.spec, model.config)
    model, dtype = place(model, ctx.device)
    req = FrameRequest(ctx.frames or DEFAULT_FRAMES, processor_size(proc.size, 518))

    def compute(clips: Sequence[Clip]) -> dict[str, list]:
        by_shape: dict[tuple, list[int]] = defaultdict(list)  # the processor keeps aspect: batch equal shapes
        for i, c in enumerate(clips):
            by_shape[c.frames.shape[1:]].append(i)
        maps: list = [None] * len(clips)
        for idx in by_shape.values():
            frames = [f for i in idx for f in clips[i].frames]
            pv = proc(images=frames, return_tensors="pt").pixel_values.to(ctx.device)
            with torch.inference_mode():
                depth = model(pixel_values=pv.to(model.dtype)).predicted_depth.float().cpu().numpy()
            k = len(clips[idx[0]].frames)
            for j, i in enumerate(idx):
                maps[i] = depth[j * k : (j + 1) * k]
        out: dict[str, list] = {D.PNG: [], D.MIN: [], D.MAX: [], D.TIMESTAMPS: []}
        for c, m in zip(clips, maps):
            enc = [D.encode_frame(frame) for frame in m]
            out[D.PNG].append([e[0] for e in enc])
            out[D.MIN].append([e[1] for e in enc])
            out[D.MAX].append([e[2] for e in enc])
            out[D.TIMESTAMPS].append(c.timestamps.tolist())
        return out

    return LoadedModel(
        model=model_id,
        weights=weights,
        details={"dtype": dtype, "encoding": "png16"},
        frames=req,
        batch_size=ctx.batch_size or 4,
        compute=compute,
        device=ctx.device,
    )


FEATURE = Feature(
    name="depth",
    group=GROUP,
    code_version=CODE_VERSION,
    setting="MMFS_DEPTH",
    default_model="depth-anything/Depth-Anything-V2-Small-hf",
    load=_load,
    description=(
        "Depth Anything V2 (MMFS_DEPTH_MODEL) relative depth for 4 sampled frames per video, stored as 16-bit "
        "PNGs with each frame's range and timestamp; mmfs_loader.depth.decode_depth reads them back."
    ),
    build_tiny=build_tiny,
)
