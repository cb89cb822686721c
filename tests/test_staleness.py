"""Stale rows: what `mmfs status` and the `<asset>_current` checks (staleness_sensor) report."""

from __future__ import annotations

import os

import dagster as dg

from mmfs_assets.defs.features import current_checks
from mmfs_assets.defs.features.current_checks import staleness_sensor
from mmfs_assets.engine.fill import fill_feature
from mmfs_assets.features import discover
from mmfs_assets.resources import build_resources
from mmfs_assets.settings import Settings
from mmfs_assets.staleness import expectations, why_stale
from tests.conftest import make_drop

FEATURES = discover()
CLIP = next(f for f in FEATURES if f.name == "clip_embedding")


def _exp(asset: str, profile: str = "tiny", env: dict | None = None, max_corrupt: int = 0, limits=None):
    return next(e for e in expectations(FEATURES, profile, env or {}, max_corrupt, limits) if e.asset == asset)


def test_why_stale_names_the_cause():
    p = "clip_embedding:clip-v1|model=local:clip-v1/x|weights=sha256:ab|frames=8x64|sampling=keyframe|dtype=fp32|profile=tiny"
    assert why_stale(p, _exp("clip_embedding")) is None
    assert why_stale(p.replace("clip-v1|", "clip-v0|", 1), _exp("clip_embedding")) == "code version clip-v0 -> clip-v1"
    assert why_stale(p, _exp("clip_embedding", "pretrained")) == "model profile tiny -> pretrained"
    # pretrained values are not stale under the tiny profile: a tiny fill never overwrites them
    assert why_stale(p.replace("|profile=tiny", ""), _exp("clip_embedding")) is None
    assert why_stale(p, _exp("clip_embedding", env={"MMFS_CLIP_SAMPLING": "exact"})) == "sampling keyframe -> exact"
    assert why_stale(p, _exp("clip_embedding", env={"MMFS_CLIP_FRAMES": "16"})) == "frames 8 -> 16"
    assert why_stale(p, _exp("clip_embedding", env={"MMFS_CLIP_FRAMES": "8"})) is None
    q = "quality:quality-v1|model=numpy|weights=none|frames=8x128|sampling=exact"
    assert why_stale(q, _exp("quality", "pretrained")) is None  # no model: the profile does not matter
    from mmfs_assets.ingest.describe import metadata_producer

    m = metadata_producer(0)  # mmfs.probe:metadata-v3/pyav-X/ffmpeg-Y|max_corrupt_frames=0 (default limits left out)
    assert why_stale(m, _exp("video_metadata")) is None
    assert why_stale(m.replace("-v3/", "-v2/"), _exp("video_metadata")) == "code version metadata-v2 -> metadata-v3"
    old_decoder = m.split("/", 1)[0] + "/pyav-1.0.0/ffmpeg-1.0|max_corrupt_frames=0"
    assert why_stale(old_decoder, _exp("video_metadata")).startswith("decoder pyav-1.0.0/ffmpeg-1.0 -> pyav-")
    assert why_stale(m, _exp("video_metadata", max_corrupt=3)) == "max_corrupt_frames 0 -> 3"
    from mmfs_assets.ingest.probe import FrameLimits

    assert why_stale(m, _exp("video_metadata", limits=FrameLimits(max_aspect_ratio=20))) == "max_aspect_ratio 10 -> 20"
    raised = metadata_producer(0, FrameLimits(max_aspect_ratio=20))
    assert raised.endswith("|max_corrupt_frames=0|max_aspect_ratio=20")
    assert why_stale(raised, _exp("video_metadata")) == "max_aspect_ratio 20 -> 10"  # back to the default


def test_staleness_sensor_reports_current_checks(env, fixture_dir, instance, monkeypatch):
    from mmfs_assets.cli.run import materialize_drop

    sensor = staleness_sensor(FEATURES)

    def tick(cursor=None):
        ctx = dg.build_sensor_context(instance=instance, cursor=cursor, resources=build_resources(Settings.from_env()))
        return sensor(ctx)

    r = tick()
    assert isinstance(r, dg.SkipReason) and "does not exist" in r.skip_message
    make_drop(env, "st-1", sorted((fixture_dir / "good").iterdir())[:2] + [fixture_dir / "bad" / "garbage.mp4"])
    assert materialize_drop("st-1", ["videos", "video_metadata", "quality"], instance, env).success
    r1 = tick()
    checks = {e.check_name: e for e in r1.asset_events}
    assert set(checks) == {"video_metadata_current", *(f"{f.name}_current" for f in FEATURES)}
    assert all(e.passed for e in checks.values())
    r2 = tick(r1.cursor)  # nothing changed: no new evaluation, the cursor stays
    assert isinstance(r2, dg.SkipReason) and "unchanged" in r2.skip_message

    monkeypatch.setenv("MMFS_QUALITY_SAMPLING", "keyframe")  # a settings change makes the drop's quality stale
    r3 = tick(r1.cursor)
    checks = {e.check_name: e for e in r3.asset_events}
    q = checks["quality_current"]
    assert not q.passed and q.severity == dg.AssetCheckSeverity.WARN
    assert q.metadata["stale_rows"].value == 3 and q.metadata["stale_partitions"].value == 1
    assert "`st-1` | 3 | sampling exact -> keyframe" in q.metadata["stale"].value
    assert checks["video_metadata_current"].passed

    assert materialize_drop("st-1", ["quality"], instance, Settings.from_env()).success  # recomputed
    # a materialization gets its check evaluated after it (the UI shows "not evaluated" until then)
    r4 = tick(r3.cursor)  # (staleness changed too: every check is evaluated again)
    assert "quality_current" in {e.check_name for e in r4.asset_events} and all(e.passed for e in r4.asset_events)
    assert materialize_drop("st-1", ["quality"], instance, Settings.from_env(), force=True).success
    r4 = tick(r4.cursor)  # nothing else changed: only the materialized asset's check
    assert [(e.check_name, e.passed) for e in r4.asset_events] == [("quality_current", True)]
    # the table moved (a fill outside Dagster), nothing was materialized: scanned again after a while, not per commit
    from mmfs_assets.features.models import load_model, model_context

    quality = next(f for f in FEATURES if f.name == "quality")
    ctx = model_context(quality, profile="tiny", model_dir=os.environ["MMFS_MODEL_DIR"], device="cpu",
                        env={"MMFS_QUALITY_SAMPLING": "keyframe"})
    fill_feature(env.table_uri, "st-1", quality, load_model(quality, ctx), properties={"mmfs.test": "1"}, force=True)
    r5 = tick(r4.cursor)
    assert isinstance(r5, dg.SkipReason) and "being written" in r5.skip_message
    monkeypatch.setattr(current_checks, "RESCAN_WHILE_WRITING_S", 0)
    r6 = tick(r4.cursor)
    assert isinstance(r6, dg.SensorResult) and not r6.asset_events and "unchanged" in r6.skip_reason.skip_message
