"""CLIP embeddings (open_clip): K sampled frames per video, pooled into one L2-normalised vector.

Each frame is embedded and L2-normalised, the K vectors are averaged and the mean is normalised again:
the video's vector, stored as ``fixed_size_list<float32, D>``. Frames are sampled at keyframes by default
(``MMFS_CLIP_SAMPLING=keyframe``: about one frame decoded per frame embedded); ``exact`` takes the frames
at the slice centres. :func:`clip_feature` declares another
embedding model as its own column group beside this one (another name, setting and dimension).

``MMFS_CLIP_MODEL`` accepts ``NAME:TAG`` (open_clip model and pretrained tag, e.g. the default
``ViT-B-32:laion2b_s34b_b79k``), ``hf-hub:ORG/REPO``, or a local directory holding
``open_clip_config.json`` and ``open_clip_model.safetensors``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from mmfs_assets.features.models import ModelUnavailableError, weights_fingerprint
from mmfs_assets.features.spec import Clip, Feature, FrameRequest, LoadedModel, ModelContext
from mmfs_loader.schema import ColumnGroup

CODE_VERSION = "clip-v1"
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def tiny_config(dim: int) -> dict:
    """A 2-layer ViT/transformer CLIP with the real output dimension, so the column type matches."""
    return {
        "embed_dim": dim,
        "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
    }


def build_tiny(dim: int, directory: Path) -> None:
    """Write a random-init CLIP (seed 0) in open_clip's ``local-dir:`` format."""
    import torch
    from open_clip.model import CLIP
    from safetensors.torch import save_file

    torch.manual_seed(0)
    cfg = tiny_config(dim)
    model = CLIP(**cfg)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(directory / "open_clip_model.safetensors"))
    preprocess = {"size": 64, "mean": list(OPENAI_MEAN), "std": list(OPENAI_STD), "interpolation": "bicubic", "resize_mode": "shortest"}
    (directory / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": preprocess}))


def _tokenizer_name(spec: str) -> str:
    p = Path(spec).expanduser()
    return f"local-dir:{p}" if p.is_dir() else spec.partition(":")[0] if not spec.startswith("hf-hub:") else spec


def _open(spec: str, device: str):
    """(model, model id, weights id) for a local dir, an hf-hub id or NAME:TAG."""
    import open_clip

    p = Path(spec).expanduser()
    if p.is_dir():
        model = open_clip.create_model(f"local-dir:{p}", device=device)
        cfg = json.loads((p / "open_clip_config.json").read_text())["model_cfg"]
        arch = f"clip-d{cfg.get('embed_dim')}-vit{cfg['vision_cfg'].get('layers')}x{cfg['vision_cfg'].get('width')}"
        return model, f"local:{p.name}/{arch}", f"sha256:{weights_fingerprint(p)}"
    if spec.startswith("hf-hub:"):
        return open_clip.create_model(spec, device=device), spec, spec
    name, _, tag = spec.partition(":")
    if not tag:
        raise ModelUnavailableError(f"{spec!r} names no pretrained weights: use NAME:TAG, e.g. ViT-B-32:laion2b_s34b_b79k")
    return open_clip.create_model(name, pretrained=tag, device=device), name, tag


def clip_feature(
    name: str = "clip_embedding",
    setting: str = "MMFS_CLIP",
    default_model: str = "ViT-B-32:laion2b_s34b_b79k",
    dim: int = 512,
    frames: int = 8,
    batch_size: int = 64,
) -> Feature:
    """Declare a CLIP-style embedding feature with its own column group ``name``."""
    group = ColumnGroup(
        name,
        (
            pa.field(name, pa.list_(pa.float32(), dim)),
            pa.field(f"{name}_timestamps", pa.list_(pa.float64())),
        ),
    )

    def load(ctx: ModelContext) -> LoadedModel:
        import torch

        from mmfs_assets.engine.preprocess import Preprocess
        from mmfs_assets.features.torch_frames import place

        model, model_id, weights = _open(ctx.spec, ctx.device)
        out_dim = int(model.visual.output_dim)
        if out_dim != dim:
            raise ModelUnavailableError(
                f"{ctx.spec!r} makes {out_dim}-d embeddings but column {name!r} holds {dim}-d vectors; "
                f"declare another embedding feature with clip_feature(dim={out_dim}) for it"
            )
        model, dtype = place(model, ctx.device)
        weight_dtype = next(model.parameters()).dtype
        pp = getattr(model.visual, "preprocess_cfg", {}) or {}
        size = model.visual.image_size
        size = int(size[0] if isinstance(size, (tuple, list)) else size)
        mean, std = pp.get("mean", OPENAI_MEAN), pp.get("std", OPENAI_STD)
        req = FrameRequest(ctx.frames or frames, size)

        def compute(clips: Sequence[Clip], pixels: torch.Tensor) -> dict[str, list]:
            with torch.inference_mode():
                e = model.encode_image(pixels).float()
            e = torch.nn.functional.normalize(e, dim=-1).view(len(clips), -1, out_dim).mean(dim=1)
            pooled = torch.nn.functional.normalize(e, dim=-1).cpu().numpy().astype(np.float32)
            return {name: list(pooled), f"{name}_timestamps": [c.timestamps.tolist() for c in clips]}

        def encode_text(texts: list[str]) -> np.ndarray:
            import open_clip

            tokens = open_clip.get_tokenizer(_tokenizer_name(ctx.spec))(texts).to(ctx.device)
            with torch.inference_mode():
                t = model.encode_text(tokens).float()
            return torch.nn.functional.normalize(t, dim=-1).cpu().numpy().astype(np.float32)

        return LoadedModel(
            model=model_id,
            weights=weights,
            details={"dtype": dtype},
            frames=req,
            batch_size=ctx.batch_size or batch_size,
            compute=compute,
            device=ctx.device,
            preprocess=Preprocess(size, tuple(mean), tuple(std)),  # resize, centre crop, normalise (on the device)
            dtype=weight_dtype,
            encode_text=encode_text,
        )

    feature = Feature(
        name=name,
        group=group,
        code_version=CODE_VERSION,
        setting=setting,
        default_model=default_model,
        load=load,
        description=(
            f"open_clip image embedding ({setting}_MODEL, default {default_model}) of {frames} sampled frames per "
            f"video, pooled into one L2-normalised {dim}-d vector."
        ),
        build_tiny=lambda d: build_tiny(dim, d),
        default_sampling="keyframe",
        normalized=True,
    )
    return feature


FEATURE = clip_feature()
