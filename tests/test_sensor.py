"""The drop sensor, evaluated with build_sensor_context against a real drop folder."""

from __future__ import annotations

import json
import os
import time

import dagster as dg

from mmfs_assets.definitions import defs
from mmfs_assets.defs.ingest.drop_sensor import drop_sensor
from mmfs_assets.resources import DropFolderResource


def _tick(instance, root, cursor=None, quiet=60.0):
    ctx = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={"drop_folder": DropFolderResource(root=str(root), quiet_seconds=quiet)},
        definitions=defs,
    )
    return drop_sensor(ctx)


def _keys(result) -> list[str]:
    return [k for r in result.dynamic_partitions_requests for k in r.partition_keys]


def test_ready_drops_registered_once(instance, tmp_path):
    root = tmp_path / "drops"
    for name in ["d1", "d2"]:
        (root / name).mkdir(parents=True)
        (root / name / "v.mp4").write_bytes(b"x")
        (root / name / "_READY").touch()
    r1 = _tick(instance, root)
    assert _keys(r1) == ["d1", "d2"]
    assert [(r.partition_key, r.run_key) for r in r1.run_requests] == [("d1", "ingest:d1"), ("d2", "ingest:d2")]
    # build_sensor_context does not apply the requests: do what the daemon does
    instance.add_dynamic_partitions("drops", _keys(r1))
    r2 = _tick(instance, root, cursor=r1.cursor)
    assert _keys(r2) == [] and not r2.run_requests
    # a restart (no cursor) still registers nothing twice
    r3 = _tick(instance, root, cursor=None)
    assert _keys(r3) == [] and not r3.run_requests


def test_unready_drops_wait_for_marker_or_quiet_period(instance, tmp_path):
    root = tmp_path / "drops"
    d = root / "busy"
    d.mkdir(parents=True)
    (d / "part.mp4").write_bytes(b"x")
    assert _keys(_tick(instance, root, quiet=3600)) == []
    old = time.time() - 7200
    for p in [d / "part.mp4", d]:
        os.utime(p, (old, old))
    assert _keys(_tick(instance, root, quiet=3600)) == ["busy"]  # quiet for 2 h > 1 h
    (d / "late.mp4").write_bytes(b"y")  # a new file resets the quiet period
    assert _keys(_tick(instance, root, quiet=3600)) == []
    (d / "_READY").touch()
    assert _keys(_tick(instance, root, quiet=3600)) == ["busy"]


def test_unsafe_names_and_symlinked_drops_refused(instance, tmp_path):
    root = tmp_path / "drops"
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "_READY").touch()
    for name in ["bad name", "quote'd", "ünicode", "ok-1"]:
        (root / name).mkdir(parents=True)
        (root / name / "_READY").touch()
    (root / "linked").symlink_to(outside, target_is_directory=True)
    (root / "_staging").mkdir()
    (root / "_staging" / "_READY").touch()
    r = _tick(instance, root)
    assert _keys(r) == ["ok-1"]
    assert sorted(json.loads(r.cursor)["refused"]) == sorted(["bad name", "quote'd", "ünicode", "linked"])
    instance.add_dynamic_partitions("drops", ["ok-1"])
    r = _tick(instance, root, cursor=r.cursor)  # nothing new: the tick's skip reason names the refused drops
    skip = r.skip_reason.skip_message
    assert "refused 4 drop folder(s): 'bad name', 'linked', \"quote'd\", 'ünicode'" in skip and "mmfs status" in skip


def test_missing_root_skips(instance, tmp_path):
    r = _tick(instance, tmp_path / "nope")
    assert not r.run_requests and r.skip_reason is not None


def test_drop_listing_ignores_links_that_leave_the_drop(tmp_path):
    from mmfs_assets.ingest.drops import list_drop_files

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.mp4").write_bytes(b"s")
    drop = tmp_path / "drop"
    (drop / "sub").mkdir(parents=True)
    (drop / "a.mp4").write_bytes(b"a")
    (drop / "sub" / "b.mp4").write_bytes(b"b")
    (drop / ".hidden.mp4").write_bytes(b"h")
    (drop / "_READY").touch()
    (drop / "out.mp4").symlink_to(outside / "secret.mp4")
    (drop / "outdir").symlink_to(outside, target_is_directory=True)
    (drop / "dangling.mp4").symlink_to(tmp_path / "missing.mp4")
    (drop / "in.mp4").symlink_to(drop / "a.mp4")
    files, skipped = list_drop_files(drop)
    assert [f.relpath for f in files] == ["a.mp4", "in.mp4", "sub/b.mp4"]
    reasons = {s.relpath: s.reason for s in skipped}
    assert reasons["out.mp4"] == reasons["outdir"] == reasons["dangling.mp4"] == "symlink leaves the drop folder"


def test_automation_follows_ingest(env, fixture_dir, instance):
    from mmfs_assets.cli.run import materialize_drop
    from tests.conftest import make_drop

    make_drop(env, "auto-1", sorted((fixture_dir / "good").iterdir())[:2])
    instance.add_dynamic_partitions("drops", ["auto-1"])
    r0 = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert r0.total_requested == 0
    assert materialize_drop("auto-1", ["videos"], instance, env).success
    r1 = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=r0.cursor)
    assert r1.get_requested_partitions(dg.AssetKey("video_metadata")) == {"auto-1"}


def test_opt_in_automation_recomputes_on_code_version_change(env, instance, monkeypatch):
    """MMFS_RECOMPUTE_ON_CODE_CHANGE=1: a new code version requests every partition of the asset once."""
    import dataclasses

    from mmfs_assets.defs.features.feature_assets import feature_asset
    from mmfs_assets.defs.features.fill_config import fill_automation
    from mmfs_assets.features import discover
    from mmfs_assets.resources import build_resources
    from mmfs_assets.settings import Settings

    assert fill_automation(Settings()).get_label() != "eager or code version changed"  # off by default
    monkeypatch.setenv("MMFS_RECOMPUTE_ON_CODE_CHANGE", "1")
    quality = next(f for f in discover() if f.name == "quality")
    instance.add_dynamic_partitions("drops", ["p1", "p2"])
    for p in ("p1", "p2"):  # their metadata exists: the opt-in condition waits for missing upstream
        instance.report_runless_asset_event(dg.AssetMaterialization("video_metadata", partition=p))

    def evaluate(code_version, cursor=None):
        asset = feature_asset(dataclasses.replace(quality, code_version=code_version))
        assert asset.automation_conditions_by_key[dg.AssetKey("quality")].get_label() == "eager or code version changed"
        defs = dg.Definitions(assets=[asset], resources=build_resources(Settings.from_env()))
        return dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)

    r0 = evaluate("quality-v1")
    r1 = evaluate("quality-v1", r0.cursor)
    assert r1.get_requested_partitions(dg.AssetKey("quality")) == set()  # unchanged: nothing
    r2 = evaluate("quality-v2", r1.cursor)
    assert r2.get_requested_partitions(dg.AssetKey("quality")) == {"p1", "p2"}
    r3 = evaluate("quality-v2", r2.cursor)
    assert r3.get_requested_partitions(dg.AssetKey("quality")) == set()  # once per change
