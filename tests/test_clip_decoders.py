"""The loader's clip decoder choice and the device-side fit of NVDEC frames (the NVDEC decode itself
needs an NVIDIA GPU: bench/gpu.py runs it where one is lent)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmfs_loader import FeatureDataset, Reading
from mmfs_loader.decode.clip_decoders import check_clip_decoder, fit_frames, use_nvdec
from mmfs_loader.decode.video import output_size
from tests.loader_util import make_table


def test_the_decoder_is_chosen_per_reading_process():
    here, absent = (lambda: None), (lambda: "CUDA is not available")
    assert use_nvdec("auto", in_worker=False, probe=here)
    assert not use_nvdec("auto", in_worker=True, probe=here)  # no CUDA context per DataLoader worker
    assert use_nvdec("nvdec", in_worker=True, probe=here)
    assert not use_nvdec("cpu", in_worker=False, probe=here)
    assert not use_nvdec("auto", in_worker=False, probe=absent)
    check_clip_decoder("auto", probe=absent)
    with pytest.raises(ValueError, match="CUDA is not available"):
        check_clip_decoder("nvdec", probe=absent)
    with pytest.raises(ValueError, match="choose one of"):
        check_clip_decoder("gpu")


def test_nvdec_is_refused_at_construction_where_it_cannot_run(tmp_path):
    if use_nvdec("nvdec", in_worker=False):
        pytest.skip("NVDEC is available on this machine")
    uri = str(tmp_path / "t.lance")
    make_table(uri, 10)
    with pytest.raises(ValueError, match="decoder='nvdec'"):
        FeatureDataset(uri, columns=["height"], clip=dict(frames=2, size=32), reading=Reading(decoder="nvdec"))
    FeatureDataset(uri, columns=["height"], reading=Reading(decoder="nvdec"))  # no clips: nothing to decode


def test_device_frames_are_scaled_and_cropped_as_the_cpu_path_does():
    h, w = 120, 160
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 // (w - 1), yy * 255 // (h - 1), np.full_like(xx, 77)], axis=-1).astype(np.uint8)
    frames = torch.from_numpy(np.stack([img, 255 - img]))  # [K, H, W, 3], as NVDEC hands them over
    out = fit_frames(frames, 48, crop=True)
    assert out.shape == (2, 3, 48, 48) and out.dtype == torch.uint8
    assert torch.all(out[0, 2] == 77)  # a flat channel stays flat
    ow, oh = output_size(w, h, 48)  # the size the CPU path scales to, before its crop
    full = fit_frames(frames, 48, crop=False)
    assert full.shape[2:] == (oh, ow)
    left = (ow - 48) // 2
    assert torch.equal(out, full[:, :, :, left : left + 48])  # centre crop
    red = full[0, 0].float()
    assert (red[:, 1:] >= red[:, :-1] - 1).all()  # a horizontal ramp stays a ramp
    assert torch.equal(fit_frames(frames, None, crop=False), frames.permute(0, 3, 1, 2))
