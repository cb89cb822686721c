"""Preprocessing on the device (declared as data) matches the CPU processors it replaced."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mmfs_assets import samples
from mmfs_assets.engine.preprocess import Preprocess, pixels
from mmfs_assets.features import discover
from mmfs_assets.features.catalog.depth import preprocess_of
from mmfs_assets.features.models import ensure_tiny
from mmfs_assets.ingest.probe import probe_video
from mmfs_loader.decode.video import VideoPlan, decode_frames

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# normalised units (1/255 of a grey level is ~0.015 here); measured: 1e-3 mean, 0.09 max on resized input
MEAN_TOL, MAX_TOL = 5e-3, 0.15


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    p = tmp_path_factory.mktemp("pp") / "wide.mp4"
    samples.write_video(p, samples.Spec("wide.mp4", 640, 360, 25, 1.0))
    return p, VideoPlan.from_row(probe_video(str(p)).values)


def _frames(video, short_side):
    p, plan = video
    return decode_frames(str(p), plan, plan.targets(3), short_side).frames


def _close(ref: torch.Tensor, got: torch.Tensor) -> None:
    assert ref.shape == got.shape
    diff = (ref.float() - got.float()).abs()
    assert diff.mean().item() < MEAN_TOL and diff.max().item() < MAX_TOL, (diff.mean().item(), diff.max().item())


@pytest.mark.parametrize("short_side", [224, None], ids=["decoder-resized", "native"])
def test_clip_matches_open_clip_transform(video, short_side):
    from open_clip.transform import image_transform

    fr = _frames(video, short_side)
    t = image_transform(224, is_train=False, mean=CLIP_MEAN, std=CLIP_STD)
    ref = torch.stack([t(Image.fromarray(f)) for f in fr])
    _close(ref, pixels(torch.from_numpy(fr), Preprocess(224, CLIP_MEAN, CLIP_STD), "cpu", torch.float32))


@pytest.mark.parametrize("short_side", [224, None], ids=["decoder-resized", "native"])
def test_caption_matches_clip_image_processor(video, short_side):
    from transformers import CLIPImageProcessor

    ip = CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224},
                            image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD))
    fr = _frames(video, short_side)
    ref = ip(images=list(fr), return_tensors="pt").pixel_values
    _close(ref, pixels(torch.from_numpy(fr), Preprocess(224, CLIP_MEAN, CLIP_STD), "cpu", torch.float32))


@pytest.mark.parametrize("short_side", [518, None], ids=["decoder-resized", "native"])
def test_depth_matches_dpt_image_processor(video, short_side):
    """Depth Anything V2's processor: aspect kept, sides to multiples of 14, no crop (518 x 924 for 16:9)."""
    from transformers import DPTImageProcessor

    dp = DPTImageProcessor(size={"height": 518, "width": 518}, keep_aspect_ratio=True, ensure_multiple_of=14, resample=3,
                           do_pad=False, image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD))
    fr = _frames(video, short_side)
    ref = dp(images=list(fr), return_tensors="pt").pixel_values
    got = pixels(torch.from_numpy(fr), preprocess_of(dp), "cpu", torch.float32)
    if short_side:
        assert tuple(got.shape[-2:]) == (518, 924)
    _close(ref, got)


def test_catalog_features_declare_what_their_processors_do(video, model_dir):
    """The tiny models' own processors (loaded like real ones) against the declared preprocessing."""
    from transformers import AutoImageProcessor, AutoProcessor

    feats = {f.name: f for f in discover()}
    depth_dir = ensure_tiny(feats["depth"], model_dir)
    dp = AutoImageProcessor.from_pretrained(depth_dir)
    pre = preprocess_of(dp)
    fr = _frames(video, pre.size)
    _close(dp(images=list(fr), return_tensors="pt").pixel_values, pixels(torch.from_numpy(fr), pre, "cpu", torch.float32))
    cap = AutoProcessor.from_pretrained(ensure_tiny(feats["caption"], model_dir)).image_processor
    fr = _frames(video, 32)
    ref = cap(images=list(fr), return_tensors="pt").pixel_values
    _close(ref, pixels(torch.from_numpy(fr), Preprocess(32, tuple(cap.image_mean), tuple(cap.image_std)), "cpu", torch.float32))


def test_uint8_goes_to_the_device_once_per_batch():
    """Half-precision output straight from uint8 input; shapes from the declared sizes."""
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (5, 100, 300, 3), dtype=np.uint8))
    out = pixels(x, Preprocess(64, CLIP_MEAN, CLIP_STD), "cpu", torch.float16)
    assert out.dtype == torch.float16 and out.shape == (5, 3, 64, 64) and out.is_contiguous()
    assert Preprocess(518, IMAGENET_MEAN, IMAGENET_STD, crop=False, multiple_of=14).target(1080, 1920) == (518, 924)
