"""The metadata probe against independent PyAV measurements of the fixtures."""

from __future__ import annotations

import pytest

from mmfs_assets import samples
from mmfs_assets.ingest.probe import probe_video
from tests.probes import independent


@pytest.mark.parametrize("spec", samples.GOOD_SPECS, ids=lambda s: s.name)
def test_good_videos_match_independent_probe(fixture_dir, spec):
    path = fixture_dir / "good" / spec.name
    r = probe_video(str(path), path.stat().st_size)
    ref = independent(path)
    assert r.error is None
    v = r.values
    assert v["num_frames"] == ref["num_frames"] == round(spec.fps * spec.seconds)
    assert (v["width"], v["height"]) == (ref["width"], ref["height"]) == (spec.width, spec.height)
    assert v["rotation"] == ref["rotation"] == (spec.rotation or 0)
    assert v["has_audio"] == ref["has_audio"] == bool(spec.audio)
    assert v["pix_fmt"] == ref["pix_fmt"]
    assert v["is_vfr"] == spec.vfr
    if spec.vfr:
        # the true average rate, not the nominal 30 the container claims
        assert v["fps"] == pytest.approx((ref["num_frames"] - 1) / ref["span"], rel=1e-6)
        assert v["fps"] < 25
    else:
        assert v["fps"] == pytest.approx(spec.fps, rel=0.01)
        assert v["duration_s"] == pytest.approx(spec.seconds, rel=0.02)
    assert v["keyframe_interval"] >= 1
    assert v["bit_rate"] > 0
    assert v["codec"] in {"h264", "hevc", "vp9", "mpeg4", "av1"}


@pytest.mark.parametrize("name", sorted(samples.BAD_FILES))
def test_bad_files_get_a_reason(fixture_dir, name):
    path = fixture_dir / "bad" / name
    with open(path, "rb") as f:  # a file object, the way blobs are read
        r = probe_video(f, path.stat().st_size)
    assert r.error is not None
    assert any(m in r.error.lower() for m in samples.BAD_FILES[name]), r.error


def test_text_file_by_path_is_not_a_video(fixture_dir):
    r = probe_video(str(fixture_dir / "bad" / "notes.txt"))
    assert r.error == "not a video: format 'tty', codec 'ansi'"
