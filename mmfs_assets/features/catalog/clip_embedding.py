"""CLIP embeddings (open_clip): K sampled frames per video, pooled into one L2-normalised vector.

Each frame is embedded and L2-normalised; the mean of the K vectors, normalised again, is the video's vector
(``fixed_size_list<float32, D>``). Frames are sampled per video by default (``MMFS_CLIP_SAMPLING=auto``: keyframes,
about one frame decoded per frame embedded, where the video has a distinct keyframe near every slice centre;
the slice centres themselves, ``exact``, where it has not; see :mod:`mmfs_assets.engine.sampling`). :func:`clip_feature` declares
another embedding model as its own column group beside this one (another name, setting and dimension).
``MMFS_CLIP_MODEL``: ``NAME:TAG`` (open_clip model and pretrained tag, e.g. the default ``ViT-B-32:laion2b_s34b_b79k``),
``hf-hub:ORG/REPO``, or a local directory holding ``open_clip_config.json`` and ``open_clip_model.safetensors``.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pyarrow as pa

from mmfs_assets.features import tiny
from mmfs_assets.features.loaders import open_clip_model, open_clip_preprocess, open_clip_tokens
from mmfs_assets.features.spec import Feature, Model, ModelContext, ModelUnavailableError
from mmfs_loader.contract.schema import ColumnGroup

CODE_VERSION = "clip-v1"


def _load(ctx: ModelContext, name: str, dim: int) -> Model:
    net, model_id, weights = open_clip_model(ctx.spec)
    if (out := int(net.visual.output_dim)) != dim:
        raise ModelUnavailableError(f"{ctx.spec!r} makes {out}-d embeddings but column {name!r} holds {dim}-d vectors; "
                                    f"declare another embedding feature with clip_feature(dim={out}) for it")
    return Model(model_id, weights, partial(_embed, name=name), net, open_clip_preprocess(net),
                 encode_text=partial(_encode_text, spec=ctx.spec))


def _embed(net, clips, pixels, name: str) -> dict[str, list]:
    from torch.nn.functional import normalize

    e = normalize(net.encode_image(pixels).float(), dim=-1).view(len(clips), -1, net.visual.output_dim).mean(dim=1)
    return {name: list(normalize(e, dim=-1).cpu().numpy().astype(np.float32))}


def _encode_text(net, texts: list[str], spec: str) -> np.ndarray:
    from torch.nn.functional import normalize

    tokens = open_clip_tokens(spec, texts).to(next(net.parameters()).device)
    return normalize(net.encode_text(tokens).float(), dim=-1).cpu().numpy().astype(np.float32)


def clip_feature(name: str = "clip_embedding", setting: str = "MMFS_CLIP", default_model: str = "ViT-B-32:laion2b_s34b_b79k",
                 dim: int = 512, frames: int = 8, batch_size: int = 64) -> Feature:
    """Declare a CLIP-style embedding feature with its own column group ``name``."""
    vector, stamps = pa.field(name, pa.list_(pa.float32(), dim)), pa.field(f"{name}_timestamps", pa.list_(pa.float64()))
    return Feature(
        name, ColumnGroup(name, (vector, stamps)), CODE_VERSION, setting, default_model, partial(_load, name=name, dim=dim),
        f"open_clip image embedding ({setting}_MODEL, default {default_model}): {frames} frames pooled, a unit {dim}-d vector.",
        frames=frames, batch_size=batch_size, build_tiny=partial(tiny.clip, dim), default_sampling="auto", normalized=True,
    )


FEATURE = clip_feature()
