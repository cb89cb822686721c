"""Depth maps (Depth Anything V2 through transformers) for K sampled frames of each video.

Each frame's relative depth is predicted at the model's working resolution (518 on the short side for
the real model) and stored losslessly at 16 bits: one PNG per frame plus its value range and timestamp
(see :mod:`mmfs_loader.depth`, whose :func:`~mmfs_loader.depth.decode_depth` reads it back). No side of
a map is longer than 16 times the model's size (the engine's bound on a model input,
:meth:`mmfs_assets.engine.preprocess.Preprocess.max_side`): a video more elongated than 16:1, which the
probe quarantines by default, gets maps of its frames squashed along the long side.

``MMFS_DEPTH_MODEL`` is a hub id (default ``depth-anything/Depth-Anything-V2-Small-hf``) or a local
directory with ``config.json``, ``model.safetensors`` and ``preprocessor_config.json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa

from mmfs_assets.engine.preprocess import Preprocess
from mmfs_assets.features.models import ModelUnavailableError, hf_identity
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


def encode_maps(values: dict) -> dict:
    """One clip's float depth maps -> the stored 16-bit PNGs, ranges and timestamps (runs in the
    engine's worker processes, off the thread that feeds the GPU)."""
    maps = values["maps"]
    maps = maps.float().numpy() if hasattr(maps, "numpy") else maps
    enc = [D.encode_frame(frame) for frame in maps]
    return {
        D.PNG: [e[0] for e in enc],
        D.MIN: [e[1] for e in enc],
        D.MAX: [e[2] for e in enc],
        D.TIMESTAMPS: values[D.TIMESTAMPS],
    }


def preprocess_of(proc) -> Preprocess:
    """The DPT processor's resize (aspect kept, sides rounded to a multiple) and normalisation, as data."""
    from mmfs_assets.features.torch_frames import processor_size

    if not getattr(proc, "keep_aspect_ratio", True) or getattr(proc, "do_pad", False):
        raise ModelUnavailableError(
            "the depth feature runs DPT processors that keep the aspect ratio without padding "
            "(Depth Anything V2's); this processor does not"
        )
    return Preprocess(
        size=processor_size(proc.size, 518),
        mean=tuple(proc.image_mean),
        std=tuple(proc.image_std),
        crop=False,
        multiple_of=int(getattr(proc, "ensure_multiple_of", 1) or 1),
    )


def _load(ctx: ModelContext) -> LoadedModel:
    import torch
    from transformers import AutoImageProcessor, AutoModelForDepthEstimation

    from mmfs_assets.features.torch_frames import place, quiet_transformers

    quiet_transformers()
    model = AutoModelForDepthEstimation.from_pretrained(ctx.spec)
    proc = AutoImageProcessor.from_pretrained(ctx.spec)
    model_id, weights = hf_identity(ctx.spec, model.config)
    model, dtype = place(model, ctx.device)
    pre = preprocess_of(proc)
    req = FrameRequest(ctx.frames or DEFAULT_FRAMES, pre.size)

    def compute(clips: Sequence[Clip], pixels: torch.Tensor) -> dict[str, list]:
        with torch.inference_mode():
            depth = model(pixel_values=pixels).predicted_depth  # [sum K, h, w], one frame shape per call
        maps = depth.float().cpu().split([len(c.frames) for c in clips])
        return {"maps": list(maps), D.TIMESTAMPS: [c.timestamps.tolist() for c in clips]}

    return LoadedModel(
        model=model_id,
        weights=weights,
        details={"dtype": dtype, "encoding": "png16"},
        frames=req,
        batch_size=ctx.batch_size or 4,
        compute=compute,
        device=ctx.device,
        preprocess=pre,
        postprocess=encode_maps,
        dtype=model.dtype,
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
