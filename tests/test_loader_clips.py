"""Decoded clips and depth from real videos through FeatureDataset (inline blobs and pointers)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch

from mmfs_assets.features import discover
from mmfs_assets.ingest.describe import describe_partition
from mmfs_assets.ingest.ingest_drop import ingest_drop
from mmfs_loader import FeatureDataset, Guard
from tests.features_util import fill, tiny

LONG = "h264 320x240 30fps 5s aac.mp4"
ROT = "h264_160x120_25fps_3s_rot90.mp4"


def _table(root: Path, fixture_dir: Path, storage: str) -> str:
    uri = str(root / f"{storage}.lance")
    drop = fixture_dir / "good"
    ingest_drop(drop, "A", uri, properties={"mmfs.asset": "videos"}, video_storage=storage)
    describe_partition(uri, "A", properties={"mmfs.asset": "video_metadata"})
    return uri


@pytest.fixture(scope="module")
def inline(tmp_path_factory, fixture_dir) -> str:
    return _table(tmp_path_factory.mktemp("clips"), fixture_dir, "inline")


def by_name(ds) -> dict[str, dict]:
    import lance

    names = dict(zip(*lance.dataset(ds.uri).to_table(columns=["id", "file_name"]).to_pydict().values()))
    return {names[s["id"]]: s for s in ds}


def reference_frames(path: Path) -> list[tuple[float, np.ndarray]]:
    with av.open(str(path)) as c:
        return [(f.time, f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]


@pytest.mark.parametrize("storage", ["inline", "pointer"])
def test_clip_frames_match_an_independent_decode(storage, inline, tmp_path, fixture_dir):
    uri = inline if storage == "inline" else _table(tmp_path, fixture_dir, "pointer")
    spec = dict(frames=4, size=None, stride=3, crop=False)
    ds = FeatureDataset(uri, columns=["file_name", "fps"], clip=spec, seed=1)
    samples = by_name(ds)
    assert all(s["clip_ok"] for s in samples.values())
    s = samples[LONG]
    assert s["frames"].dtype == torch.uint8 and s["frames"].shape == (4, 3, 240, 320)
    ref = reference_frames(fixture_dir / "good" / LONG)
    times = s["frame_times"].numpy()
    assert np.allclose(np.diff(times), 3 / 30, atol=1e-3)  # consecutive strided frames
    for k, t in enumerate(times):
        want = min(ref, key=lambda r: abs(r[0] - t))
        assert abs(want[0] - t) < 1e-3
        assert np.array_equal(s["frames"][k].permute(1, 2, 0).numpy(), want[1])


def test_clip_position_is_drawn_from_seed_epoch_and_row(inline):
    spec = dict(frames=2, size=32)
    a = by_name(FeatureDataset(inline, columns=["file_name"], clip=spec, seed=1))
    b = by_name(FeatureDataset(inline, columns=["file_name"], clip=spec, seed=1))
    e1 = FeatureDataset(inline, columns=["file_name"], clip=spec, seed=1)
    e1.set_epoch(1)
    c = by_name(e1)
    assert all(torch.equal(a[n]["frames"], b[n]["frames"]) for n in a)
    starts = lambda d: {n: float(s["frame_times"][0]) for n, s in d.items()}  # noqa: E731
    assert starts(a) != starts(c)
    for s in a.values():
        assert s["frames"].shape == (2, 3, 32, 32)  # short side resized, then centre-cropped


def test_rotation_is_applied(inline):
    ds = FeatureDataset(inline, columns=["file_name"], clip=dict(frames=1, size=None, crop=False), filter="rotation = 90")
    (s,) = list(ds)
    assert s["file_name"] == ROT and s["frames"].shape == (1, 3, 160, 120)  # stored 160x120 landscape


def test_clip_batches_collate(inline):
    ds = FeatureDataset(inline, columns=["file_name"], clip=dict(frames=3, size=48), batch_size=4, shuffle=True)
    b = next(iter(ds))
    assert b["frames"].shape == (4, 3, 3, 48, 48) and b["clip_ok"].all() and len(b["id"]) == 4


def test_depth_decodes_to_float_tensors(inline, tmp_path, model_dir):
    import shutil

    uri = str(tmp_path / "d.lance")
    shutil.copytree(inline, uri)
    feature = {f.name: f for f in discover()}["depth"]
    fill(uri, "A", feature, tiny(feature, model_dir))
    ds = FeatureDataset(uri, columns=["depth"], guard=Guard(drop_incomplete=True))
    s = next(iter(ds))
    assert set(s) == {"id", "depth", "depth_timestamps"}
    assert s["depth"].dtype == torch.float32 and s["depth"].dim() == 3 and torch.isfinite(s["depth"]).all()
    assert s["depth"].shape[0] == len(s["depth_timestamps"])


def test_unreadable_video_yields_zeros_and_clip_ok_false(tmp_path, fixture_dir):
    drop = tmp_path / "drop"
    drop.mkdir()
    for n in (LONG, ROT):
        (drop / n).write_bytes((fixture_dir / "good" / n).read_bytes())
    uri = _table(tmp_path, type("F", (), {"__truediv__": lambda self, _: drop})(), "pointer")
    (drop / ROT).unlink()  # the pointer now leads nowhere; the metadata was taken before
    ds = FeatureDataset(uri, columns=["file_name"], clip=dict(frames=2, size=32), batch_size=2)
    (b,) = list(ds)
    ok = dict(zip(b["file_name"], b["clip_ok"].tolist()))
    assert ok == {LONG: True, ROT: False}
    assert b["frames"].shape == (2, 2, 3, 32, 32) and not b["frames"][b["file_name"].index(ROT)].any()


def test_keyframe_aligned_clips_start_on_a_keyframe_and_decode_only_what_they_keep(inline, fixture_dir):
    import lance

    from mmfs_loader.decode.clips import ClipSpec
    from mmfs_loader.decode.video import PLAN_COLUMNS, VideoPlan, decode_frames

    spec = ClipSpec(frames=6, size=None, crop=False, align="keyframe")
    ds = FeatureDataset(inline, columns=["file_name"], clip=spec, seed=2)
    s = by_name(ds)[LONG]
    assert s["clip_ok"]
    meta = lance.dataset(inline).to_table(columns=["file_name", *PLAN_COLUMNS], filter=f"file_name = '{LONG}'").to_pylist()[0]
    plan = VideoPlan.from_row(meta)
    times = s["frame_times"].numpy()
    assert min(abs(k - times[0]) for k in plan.keyframe_times) < 1e-3  # the clip starts on a keyframe
    assert np.allclose(np.diff(times), 1 / 30, atol=1e-3)  # then consecutive frames
    ref = reference_frames(fixture_dir / "good" / LONG)
    for k, t in enumerate(times):  # the same pixels as an independent decode
        want = min(ref, key=lambda r: abs(r[0] - t))
        assert np.array_equal(s["frames"][k].permute(1, 2, 0).numpy(), want[1])
    starts = set()
    for u in np.linspace(0, 0.999, 40):  # every draw starts on a keyframe where the window fits
        t = spec.times(plan, float(u))
        starts.add(round(float(t[0]), 3))
        d = decode_frames(str(fixture_dir / "good" / LONG), plan, t)
        assert d.frames_decoded <= spec.frames + 1  # nothing decoded before the clip
        assert t[-1] <= plan.duration_s
    assert len(starts) > 1
    unaligned = ClipSpec(frames=6, size=None, crop=False)
    assert unaligned.to_dict() == {"frames": 6, "size": None, "stride": None, "crop": False}  # recipes keep their hash
    with pytest.raises(ValueError, match="align"):
        ClipSpec(align="nearest")


def test_uncropped_clips_are_a_list_in_every_batch(inline):
    """Issue 25.7: uncropped clips keep their video's shape, so ``frames`` was a stacked tensor in a batch of
    one shape and a list in a mixed one. Now the clip spec decides the type, never the batch."""
    same = "width = 128 AND height = 96"  # three 128x96 videos: one shape
    for filt in (same, None):
        ds = FeatureDataset(inline, columns=["file_name"], clip=dict(frames=2, size=48, crop=False), batch_size=3,
                            filter=filt)
        loader = FeatureDataset(inline, columns=["file_name"], clip=dict(frames=2, size=48, crop=False),
                                filter=filt).dataloader(batch_size=3, num_workers=0)
        for batches in (list(ds), list(loader)):
            assert batches
            for b in batches:
                assert type(b["frames"]) is list and len(b["frames"]) == len(b["id"])
                assert all(f.dtype == torch.uint8 and f.shape[:2] == (2, 3) and min(f.shape[2:]) == 48 for f in b["frames"])
                assert b["frame_times"].shape == (len(b["id"]), 2)  # fixed shape: stacked
    b = next(iter(FeatureDataset(inline, columns=["file_name"], clip=dict(frames=2, size=48), batch_size=3, filter=same)))
    assert isinstance(b["frames"], torch.Tensor) and b["frames"].shape == (3, 2, 3, 48, 48)  # cropped: one tensor
