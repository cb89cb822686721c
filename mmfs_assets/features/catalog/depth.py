"""Depth maps (Depth Anything V2 through transformers) for K sampled frames of each video.

Each frame's relative depth is predicted at the model's working resolution (518 on the short side for
the real model) and stored losslessly at 16 bits: one PNG per frame plus its value range and timestamp
(see :mod:`mmfs_loader.contract.depth`, whose :func:`~mmfs_loader.contract.depth.decode_depth` reads it back). No side of
a map is longer than 16 times the model's size (the engine's bound on a model input,
:meth:`mmfs_assets.engine.preprocess.Preprocess.max_side`): a video more elongated than 16:1, which the
probe quarantines by default, gets maps of its frames squashed along the long side.

``MMFS_DEPTH_MODEL`` is a hub id (default ``depth-anything/Depth-Anything-V2-Small-hf``) or a local
directory with ``config.json``, ``model.safetensors`` and ``preprocessor_config.json``.
"""

from __future__ import annotations

import pyarrow as pa

from mmfs_assets.engine.preprocess import Preprocess
from mmfs_assets.features import tiny
from mmfs_assets.features.loaders import processor_size, transformers_model
from mmfs_assets.features.spec import Feature, Model, ModelContext, ModelUnavailableError
from mmfs_loader.contract import depth as D
from mmfs_loader.contract.schema import ColumnGroup

CODE_VERSION = "depth-v1"
GROUP = ColumnGroup("depth", (pa.field(D.PNG, pa.list_(pa.binary())), pa.field(D.MIN, pa.list_(pa.float32())),
                              pa.field(D.MAX, pa.list_(pa.float32())), pa.field(D.TIMESTAMPS, pa.list_(pa.float64()))))


def _load(ctx: ModelContext) -> Model:
    from transformers import AutoImageProcessor

    net, model_id, weights = transformers_model("AutoModelForDepthEstimation", ctx.spec)
    return Model(model_id, weights, _predict, net, preprocess_of(AutoImageProcessor.from_pretrained(ctx.spec)),
                 postprocess=encode_maps, details={"encoding": "png16"})


def _predict(net, clips, pixels) -> dict[str, list]:
    depth = net(pixel_values=pixels).predicted_depth  # [sum K, h, w], one frame shape per call
    return {"maps": list(depth.float().cpu().split([len(c.frames) for c in clips]))}


def encode_maps(values: dict) -> dict:
    """One clip's float depth maps -> the stored 16-bit PNGs and ranges (runs in the engine's worker
    processes, off the thread that feeds the GPU; the engine adds the timestamps)."""
    maps = values["maps"]
    enc = [D.encode_frame(frame) for frame in (maps.float().numpy() if hasattr(maps, "numpy") else maps)]
    return {D.PNG: [e[0] for e in enc], D.MIN: [e[1] for e in enc], D.MAX: [e[2] for e in enc]}


def preprocess_of(proc) -> Preprocess:
    """The DPT processor's resize (aspect kept, sides rounded to a multiple) and normalisation, as data."""
    if not getattr(proc, "keep_aspect_ratio", True) or getattr(proc, "do_pad", False):
        raise ModelUnavailableError("the depth feature runs DPT processors that keep the aspect ratio without padding "
                                    "(Depth Anything V2's); this processor does not")
    return Preprocess(processor_size(proc.size, 518), tuple(proc.image_mean), tuple(proc.image_std), crop=False,
                      multiple_of=int(getattr(proc, "ensure_multiple_of", 1) or 1))


FEATURE = Feature(
    "depth", GROUP, CODE_VERSION, "MMFS_DEPTH", "depth-anything/Depth-Anything-V2-Small-hf", _load,
    "Depth Anything V2 (MMFS_DEPTH_MODEL) relative depth for 4 sampled frames per video, stored as 16-bit PNGs with each "
    "frame's range and timestamp; mmfs_loader.contract.depth.decode_depth reads them back.", frames=4, batch_size=4, build_tiny=tiny.depth,
)
