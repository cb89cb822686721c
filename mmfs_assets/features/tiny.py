"""Tiny random-init models of the catalog's families, for ``MMFS_MODEL_PROFILE=tiny`` and tests.

Each builder writes a model in the same on-disk format as real weights (open_clip's ``local-dir:``,
transformers' ``save_pretrained``), so it is loaded through the same code as a real one; a feature
declares its builder as ``Feature.build_tiny`` and :func:`mmfs_assets.features.models.ensure_tiny` runs
it once per code version. Seeded: the same model, and so the same weights hash in the producer, on every
machine with the same library versions. Their values are meaningless; tests assert shapes, dtypes,
finiteness, determinism and provenance, never values.
"""

from __future__ import annotations

import json
from pathlib import Path

from mmfs_assets.features.loaders import OPENAI_MEAN, OPENAI_STD, quiet_transformers

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
CAPTION_WORDS = (
    "a the of and in on with is are person people man woman child dog cat car street room kitchen water "
    "ball table walking running playing talking sitting holding cooking driving riding dancing singing "
    "outside inside video shows group small large red blue green white black"
).split()


def clip_config(dim: int) -> dict:
    """A 2-layer ViT/transformer CLIP with the real output dimension, so the column type matches."""
    return {
        "embed_dim": dim,
        "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
    }


def clip(dim: int, directory: Path) -> None:
    """Write a random-init CLIP (seed 0) in open_clip's ``local-dir:`` format."""
    import torch
    from open_clip.model import CLIP
    from safetensors.torch import save_file

    torch.manual_seed(0)
    cfg = clip_config(dim)
    model = CLIP(**cfg)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(directory / "open_clip_model.safetensors"))
    preprocess = {"size": 64, "mean": list(OPENAI_MEAN), "std": list(OPENAI_STD), "interpolation": "bicubic", "resize_mode": "shortest"}
    (directory / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": preprocess}))


def depth(directory: Path) -> None:
    """A 4-layer DINOv2 backbone + DPT head, random init (seed 0), with a 70-px DPT processor."""
    import torch
    import transformers as T

    quiet_transformers()
    torch.manual_seed(0)
    backbone = T.Dinov2Config(  # type: ignore[call-arg]  # transformers' configs take their fields as **kwargs
        hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64, patch_size=14,
        image_size=70, out_features=["stage1", "stage2", "stage3", "stage4"], reshape_hidden_states=False,
    )
    cfg = T.DepthAnythingConfig(
        backbone_config=backbone, patch_size=14, reassemble_hidden_size=32,
        neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16, head_hidden_size=8,
    )
    T.DepthAnythingForDepthEstimation(cfg).eval().save_pretrained(directory)
    T.DPTImageProcessor(
        size={"height": 70, "width": 70}, keep_aspect_ratio=True, ensure_multiple_of=14, resample=3,
        do_pad=False, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD,
    ).save_pretrained(directory)


def caption(directory: Path) -> None:
    """A 2-layer GIT with 4 temporal frame embeddings, random init (seed 0), BERT word-piece tokenizer."""
    import torch
    import transformers as T
    from transformers import BertTokenizerFast  # type: ignore[attr-defined]  # a lazy export mypy does not see

    quiet_transformers()
    torch.manual_seed(0)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *CAPTION_WORDS]
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    ip = T.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    cfg = T.GitConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=16),
        vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_image_with_embedding=4, bos_token_id=2, eos_token_id=3, pad_token_id=0, max_position_embeddings=64,
    )
    model = T.GitForCausalLM(cfg).eval()
    # random weights would mostly pick [PAD]/[UNK]/[SEP]: keep the tiny model's captions made of words
    model.generation_config.suppress_tokens = [0, 1, 2, 4]
    model.generation_config.begin_suppress_tokens = [3]
    model.generation_config.min_new_tokens = 3
    model.save_pretrained(directory)
    T.GitProcessor(image_processor=ip, tokenizer=tok).save_pretrained(directory)
