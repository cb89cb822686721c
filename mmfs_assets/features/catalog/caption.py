"""Video captions: one caption per video from GIT, a captioner that sees several frames at once.

GIT's video checkpoints (default ``microsoft/git-base-vatex``, trained on VATEX) take ``[B, K, 3, H, W]``
pixel values, K up to the model's ``num_image_with_embedding`` (6), and generate one caption for the
clip. It runs on transformers 5 (open_clip's CoCa ``generate()`` does not). Greedy decoding, 30 tokens.

``MMFS_CAPTION_MODEL`` is a hub id or a local directory saved with ``save_pretrained`` (model + processor).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa

from mmfs_assets.features.models import ModelUnavailableError, hf_identity
from mmfs_assets.features.spec import Clip, Feature, FrameRequest, LoadedModel, ModelContext
from mmfs_loader.schema import ColumnGroup

CODE_VERSION = "caption-v1"
MAX_NEW_TOKENS = 30
GROUP = ColumnGroup("caption", (pa.field("caption", pa.string()), pa.field("caption_timestamps", pa.list_(pa.float64()))))
_TINY_WORDS = (
    "a the of and in on with is are person people man woman child dog cat car street room kitchen water "
    "ball table walking running playing talking sitting holding cooking driving riding dancing singing "
    "outside inside video shows group small large red blue green white black"
).split()


def build_tiny(directory: Path) -> None:
    """A 2-layer GIT with 4 temporal frame embeddings, random init (seed 0), BERT word-piece tokenizer."""
    import torch
    from transformers import BertTokenizerFast, CLIPImageProcessor, GitConfig, GitForCausalLM, GitProcessor

    from mmfs_assets.features.torch_frames import quiet_transformers

    quiet_transformers()
    torch.manual_seed(0)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *_TINY_WORDS]
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    ip = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    cfg = GitConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=16),
        vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_image_with_embedding=4, bos_token_id=2, eos_token_id=3, pad_token_id=0, max_position_embeddings=64,
    )
    model = GitForCausalLM(cfg).eval()
    # random weights would mostly pick [PAD]/[UNK]/[SEP]: keep the tiny model's captions made of words
    model.generation_config.suppress_tokens = [0, 1, 2, 4]
    model.generation_config.begin_suppress_tokens = [3]
    model.generation_config.min_new_tokens = 3
    model.save_pretrained(directory)
    GitProcessor(image_processor=ip, tokenizer=tok).save_pretrained(directory)


def _load(ctx: ModelContext) -> LoadedModel:
    import torch
    from transformers import AutoModelForCausalLM, AutoProcessor

    from mmfs_assets.engine.preprocess import Preprocess
    from mmfs_assets.features.torch_frames import place, processor_size, quiet_transformers

    quiet_transformers()
    model = AutoModelForCausalLM.from_pretrained(ctx.spec)
    proc = AutoProcessor.from_pretrained(ctx.spec)
    if model.config.model_type != "git":
        raise ModelUnavailableError(
            f"{ctx.spec!r} is a {model.config.model_type!r} model; the caption feature runs GIT video captioners "
            f"(e.g. microsoft/git-base-vatex): set {ctx.setting}"
        )
    max_frames = int(getattr(model.config, "num_image_with_embedding", None) or 1)
    k = ctx.frames or max_frames
    if k > max_frames:
        raise ModelUnavailableError(f"{ctx.spec!r} takes at most {max_frames} frames per video, {k} asked for")
    model_id, weights = hf_identity(ctx.spec, model.config)
    model, dtype = place(model, ctx.device)
    ip = proc.image_processor
    size = processor_size(ip.crop_size, 224)
    req = FrameRequest(k, size)
    pre = Preprocess(size, tuple(ip.image_mean), tuple(ip.image_std), crop=bool(getattr(ip, "do_center_crop", True)))

    def compute(clips: Sequence[Clip], pixels: torch.Tensor) -> dict[str, list]:
        pv = pixels.view(len(clips), -1, *pixels.shape[1:])  # [B, K, 3, H, W]: GIT's video input
        with torch.inference_mode():
            ids = model.generate(pixel_values=pv, max_new_tokens=MAX_NEW_TOKENS, do_sample=False, num_beams=1)
        texts = [t.strip() for t in proc.batch_decode(ids, skip_special_tokens=True)]
        return {"caption": texts, "caption_timestamps": [c.timestamps.tolist() for c in clips]}

    return LoadedModel(
        model=model_id,
        weights=weights,
        details={"decoding": f"greedy{MAX_NEW_TOKENS}", "dtype": dtype},
        frames=req,
        batch_size=ctx.batch_size or 8,
        compute=compute,
        device=ctx.device,
        preprocess=pre,
        dtype=model.dtype,
    )


FEATURE = Feature(
    name="caption",
    group=GROUP,
    code_version=CODE_VERSION,
    setting="MMFS_CAPTION",
    default_model="microsoft/git-base-vatex",
    load=_load,
    description="One caption per video from GIT (MMFS_CAPTION_MODEL, default microsoft/git-base-vatex) over 6 sampled frames.",
    build_tiny=build_tiny,
    default_sampling="keyframe",
)
