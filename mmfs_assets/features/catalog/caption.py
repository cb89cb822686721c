"""Video captions: one caption per video from GIT, a captioner that sees several frames at once.

GIT's video checkpoints (default ``microsoft/git-base-vatex``, trained on VATEX) take ``[B, K, 3, H, W]``
pixel values, K up to the model's ``num_image_with_embedding`` (6), and generate one caption for the
clip. It runs on transformers 5 (open_clip's CoCa ``generate()`` does not). Greedy decoding, 30 tokens.

``MMFS_CAPTION_MODEL`` is a hub id or a local directory saved with ``save_pretrained`` (model + processor).
"""

from __future__ import annotations

from functools import partial

import pyarrow as pa

from mmfs_assets.engine.preprocess import Preprocess
from mmfs_assets.features import tiny
from mmfs_assets.features.loaders import processor_size, transformers_model
from mmfs_assets.features.spec import Feature, Model, ModelContext, ModelUnavailableError
from mmfs_loader.contract.schema import ColumnGroup

CODE_VERSION = "caption-v1"
MAX_NEW_TOKENS = 30
GROUP = ColumnGroup("caption", (pa.field("caption", pa.string()), pa.field("caption_timestamps", pa.list_(pa.float64()))))


def _load(ctx: ModelContext) -> Model:
    from transformers import AutoProcessor

    net, model_id, weights = transformers_model("AutoModelForCausalLM", ctx.spec)
    proc = AutoProcessor.from_pretrained(ctx.spec)
    if net.config.model_type != "git":
        raise ModelUnavailableError(f"{ctx.spec!r} is a {net.config.model_type!r} model; the caption feature runs GIT video "
                                    f"captioners (e.g. microsoft/git-base-vatex): set {ctx.setting}")
    ip = proc.image_processor
    pre = Preprocess(processor_size(ip.crop_size, 224), tuple(ip.image_mean), tuple(ip.image_std),
                     crop=bool(getattr(ip, "do_center_crop", True)))
    # the model's temporal embeddings bound the frames per video; the default is all of them
    return Model(model_id, weights, partial(_caption, decode=proc.batch_decode), net, pre,
                 max_frames=int(getattr(net.config, "num_image_with_embedding", None) or 1),
                 details={"decoding": f"greedy{MAX_NEW_TOKENS}"})


def _caption(net, clips, pixels, decode) -> dict[str, list]:
    pv = pixels.view(len(clips), -1, *pixels.shape[1:])  # [B, K, 3, H, W]: GIT's video input
    ids = net.generate(pixel_values=pv, max_new_tokens=MAX_NEW_TOKENS, do_sample=False, num_beams=1)
    return {"caption": [t.strip() for t in decode(ids, skip_special_tokens=True)]}


FEATURE = Feature(
    "caption", GROUP, CODE_VERSION, "MMFS_CAPTION", "microsoft/git-base-vatex", _load,
    "One caption per video from GIT (MMFS_CAPTION_MODEL, default microsoft/git-base-vatex) over 6 sampled frames.",
    batch_size=8, build_tiny=tiny.caption, default_sampling="auto",
)
