"""``MMFS_<F>_SAMPLING=auto`` (CLIP's and captions' default): keyframes where a video's keyframes give a
distinct frame per target, exact frames where they do not; each row's producer says which; the rows that
still repeat frames show in ``mmfs status``, the staleness check and the asset's metadata."""

from __future__ import annotations

import shutil

import lance
import numpy as np
import pytest

from mmfs_assets import samples
from mmfs_assets.defs.features.group_summary import summarize_group
from mmfs_assets.engine.sampling import keyframes_suffice, row_producer, row_sampling
from mmfs_assets.features import discover
from mmfs_assets.staleness import expectations, stale_features
from mmfs_loader.contract.status import table_status
from mmfs_loader.decode.video import VideoPlan
from tests.features_util import build_table, fill, tiny

CLIP = {f.name: f for f in discover()}["clip_embedding"]
STAMPS = "clip_embedding_timestamps"


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> str:
    """Drop G: an 8 s video with a keyframe every second, the same with one keyframe, and a 5-frame video."""
    root = tmp_path_factory.mktemp("auto")
    drop = root / "G"
    drop.mkdir()
    for name, gop, seconds in (("dense.mp4", 30, 8.0), ("sparse.mp4", 300, 8.0), ("short.mp4", 30, 5 / 30)):
        samples.write_video(drop / name, samples.Spec(name, 96, 64, 30, seconds, gop=gop, options={"sc_threshold": "0"}))
    uri = str(root / "g.lance")
    build_table(uri, {"G": drop})
    return uri


def _rows(uri: str) -> dict[str, dict]:
    t = lance.dataset(uri).to_table(columns=["file_name", "clip_embedding_producer", STAMPS]).to_pylist()
    return {r["file_name"]: r for r in t}


def test_choice_follows_the_keyframes():
    dense = VideoPlan(8.0, 30.0, 30.0, keyframe_times=tuple(float(i) for i in range(8)))
    sparse = VideoPlan(8.0, 30.0, 240.0, keyframe_times=(0.0,))
    four = VideoPlan(8.0, 30.0, 60.0, keyframe_times=(0.0, 2.0, 4.0, 6.0))
    assert keyframes_suffice(dense, 8) and row_sampling("auto", dense, 8) == "keyframe"
    assert not keyframes_suffice(sparse, 8) and row_sampling("auto", sparse, 8) == "exact"
    assert row_sampling("auto", four, 8) == "exact" and row_sampling("auto", four, 4) == "keyframe"
    assert row_sampling("auto", VideoPlan(8.0, 30.0, 30.0), 8) == "exact"  # no keyframe times recorded
    assert row_sampling("keyframe", sparse, 8) == "keyframe" and row_sampling("exact", dense, 8) == "exact"
    assert row_producer("c:v1|frames=8x64|sampling=auto|dtype=fp32", "exact") == "c:v1|frames=8x64|sampling=exact|dtype=fp32"


def test_auto_samples_each_row_by_its_keyframes(table, tmp_path, model_dir):
    uri = str(tmp_path / "t.lance")
    shutil.copytree(table, uri)
    auto = tiny(CLIP, model_dir)
    assert auto.sampling == "auto" and "|sampling=auto|" in auto.producer
    rep = fill(uri, "G", CLIP, auto, decode_workers=2)
    assert rep.rows_computed == 3 and rep.rows_sampled_keyframe == 1 and rep.rows_sampled_exact == 2
    assert rep.rows_with_repeated_frames == 1  # only the 5-frame video: no sampling gives it 8 distinct frames
    rows = _rows(uri)
    assert rows["dense.mp4"]["clip_embedding_producer"] == row_producer(auto.producer, "keyframe")
    assert rows["sparse.mp4"]["clip_embedding_producer"] == row_producer(auto.producer, "exact")
    assert rows["dense.mp4"][STAMPS] == pytest.approx([float(i) for i in range(8)])  # keyframes, all distinct
    assert rows["sparse.mp4"][STAMPS] == pytest.approx([i + 0.5 for i in range(8)])  # slice centres, not 8 x 0.0
    assert len(set(rows["short.mp4"][STAMPS])) == 5
    assert not any("auto" in (r["clip_embedding_producer"] or "") for r in rows.values())
    assert fill(uri, "G", CLIP, auto, decode_workers=2).rows_computed == 0  # every row current

    # what the partition shows: status, the asset's summary, staleness (nothing stale)
    (st,) = table_status(lance.dataset(uri))
    assert st.groups["clip_embedding"].rows_with_repeated_frames == 1
    assert summarize_group(lance.dataset(uri), CLIP.group, "G", auto.producer).rows_with_repeated_frames == 1
    assert summarize_group(lance.dataset(uri), CLIP.group, "G", auto.producer).not_current == 0
    exps = expectations([CLIP], "tiny", {})
    assert stale_features([st], exps) == []


def test_switching_modes_recomputes_only_the_rows_whose_mode_changes(table, tmp_path, model_dir):
    uri = str(tmp_path / "t.lance")
    shutil.copytree(table, uri)
    key = tiny(CLIP, model_dir, MMFS_CLIP_SAMPLING="keyframe")
    rep = fill(uri, "G", CLIP, key, decode_workers=2)
    assert rep.rows_with_repeated_frames == 2  # the one-keyframe video (8 copies of one frame) and the short one
    assert np.unique(_rows(uri)["sparse.mp4"][STAMPS]).tolist() == [0.0]

    # under auto, keyframe values whose frames repeat are stale (status's staleness says so), the others are not
    (st,) = table_status(lance.dataset(uri))
    stale = stale_features([st], expectations([CLIP], "tiny", {}))
    assert [(s.feature, s.rows, s.cause) for s in stale] == [
        ("clip_embedding", 2, "sampling keyframe -> exact (too few keyframes)")]
    auto = tiny(CLIP, model_dir)
    rep = fill(uri, "G", CLIP, auto, decode_workers=2)
    assert rep.rows_computed == 2 and rep.rows_already_current == 1  # the dense video kept its keyframe values
    rows = _rows(uri)
    assert rows["sparse.mp4"][STAMPS] == pytest.approx([i + 0.5 for i in range(8)])
    (st,) = table_status(lance.dataset(uri))
    assert stale_features([st], expectations([CLIP], "tiny", {})) == []

    # exact values stay current under auto (they are the frames on screen at the targets)
    exact = tiny(CLIP, model_dir, MMFS_CLIP_SAMPLING="exact")
    assert fill(uri, "G", CLIP, exact, decode_workers=2).rows_computed == 1  # only the dense video changes mode
    assert fill(uri, "G", CLIP, auto, decode_workers=2).rows_computed == 0
    (st,) = table_status(lance.dataset(uri))
    assert stale_features([st], expectations([CLIP], "tiny", {})) == []
    assert stale_features([st], expectations([CLIP], "tiny", {"MMFS_CLIP_SAMPLING": "keyframe"}))[0].rows == 3
