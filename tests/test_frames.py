"""Frame sampling planned from the metadata columns matches a full decode, frame for frame."""

from __future__ import annotations

import av
import numpy as np
import pytest

from mmfs_assets import samples
from mmfs_assets.ingest.probe import probe_video
from mmfs_loader.decode.video import VideoPlan, decode_frames, output_size


def _plan(path, keyframes: bool = True) -> VideoPlan:
    v = probe_video(str(path)).values
    if not keyframes:  # a row described before keyframe times were recorded
        v = {**v, "keyframe_times": None}
    return VideoPlan.from_row(v)


class _Clip:
    def __init__(self, rowid, d):
        self.rowid, self.frames, self.timestamps = rowid, d.frames, d.timestamps


def decode_clip(path: str, rowid: int, plan: VideoPlan, count: int, short_side=None, mode="exact", threads=0):
    return _Clip(rowid, decode_frames(path, plan, plan.targets(count), short_side, mode=mode, threads=threads))


def _reference(path, targets: np.ndarray, fps: float) -> tuple[list[np.ndarray], list[float]]:
    """Decode every frame independently; for each target take the first frame shown at or after it."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        start = float(s.start_time * s.time_base) if s.start_time is not None else 0.0
        frames = [(f.time - start, f.to_ndarray(format="rgb24"), f.rotation) for f in c.decode(s)]
    out, times = [], []
    for t in targets:
        hit = next((f for f in frames if f[0] >= t - 0.5 / fps), frames[-1])
        img = hit[1]
        if hit[2]:
            img = np.rot90(img, k=int(hit[2]) % 360 // 90)
        out.append(img)
        times.append(hit[0])
    return out, times


@pytest.mark.parametrize("keyframes", [True, False], ids=["planned", "unplanned"])
@pytest.mark.parametrize("spec", samples.GOOD_SPECS, ids=lambda s: s.name)
def test_sampled_frames_equal_a_full_decode(spec, keyframes, fixture_dir):
    path = fixture_dir / "good" / spec.name
    plan = _plan(path, keyframes)
    clip = decode_clip(str(path), 7, plan, 5, threads=1)
    ref, times = _reference(path, plan.targets(5), plan.fps)
    assert clip.rowid == 7 and clip.frames.dtype == np.uint8 and clip.frames.shape[0] == 5
    np.testing.assert_allclose(clip.timestamps, times, atol=1e-6)
    for got, want in zip(clip.frames, ref):
        assert got.shape == want.shape
        assert np.abs(got.astype(int) - want.astype(int)).mean() < 1.0


def test_frames_are_resized_and_upright(fixture_dir):
    path = fixture_dir / "good" / "h264_160x120_25fps_3s_rot90.mp4"
    clip = decode_clip(str(path), 0, _plan(path), 3, short_side=60)
    assert clip.frames.shape == (3, 80, 60, 3)  # coded 160x120, displayed rotated by 90 degrees
    assert output_size(1280, 720, 224) == (398, 224)
    assert output_size(720, 1280, 224) == (224, 398)


def test_more_targets_than_frames_repeat_frames(fixture_dir):
    path = fixture_dir / "good" / "h264_64x64_24fps_1s.mp4"
    clip = decode_clip(str(path), 0, _plan(path), 48)
    assert clip.frames.shape[0] == 48
    assert len(np.unique(clip.timestamps)) == 24  # each of the 24 frames, each twice
