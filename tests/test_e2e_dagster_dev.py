"""End to end: the real `dagster dev` (webserver + daemon), a folder dropped, ingest and metadata
materialized by the sensor and the automation, observed through GraphQL; a screenshot of the UI."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import lance
import pytest

from tests.dagster_server import ROOT, DagsterDev

pytestmark = pytest.mark.slow
FEATURES = ("clip_embedding", "depth", "caption", "quality")

MATS = """
query($key: [String!]!, $p: [String!]) {
  assetNodeOrError(assetKey: {path: $key}) {
    ... on AssetNode { assetMaterializations(partitions: $p) { partition runId
      metadataEntries { label ... on IntMetadataEntry { intValue } } } }
  }
}"""


def _materialized(server: DagsterDev, asset: str, partition: str) -> list[dict]:
    data = server.gql(MATS, {"key": [asset], "p": [partition]})
    return data["assetNodeOrError"]["assetMaterializations"]


def test_drop_to_metadata_through_dagster_dev(tmp_path, fixture_dir, model_dir):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    drops = tmp_path / "drops"
    drops.mkdir()
    env = {
        "DAGSTER_HOME": str(home),
        "MMFS_TABLE_URI": str(tmp_path / "videos.lance"),
        "MMFS_DROP_DIR": str(drops),
        "MMFS_DROP_QUIET_SECONDS": "3600",
        "MMFS_MODEL_PROFILE": "tiny",
        "MMFS_MODEL_DIR": str(model_dir),
    }
    good = sorted((fixture_dir / "good").iterdir())[:3]
    bad = [fixture_dir / "bad" / "garbage.mp4"]
    with DagsterDev(env, tmp_path / "dagster_dev.log") as server:
        sensors = server.gql("{ sensorsOrError(repositorySelector: {repositoryName: \"__repository__\", "
                             "repositoryLocationName: \"mmfs\"}) { ... on Sensors { results { name "
                             "sensorState { status } } } } }")["sensorsOrError"]["results"]
        assert {s["name"]: s["sensorState"]["status"] for s in sensors} == {
            "drop_sensor": "RUNNING", "features_automation": "RUNNING", "dead_run_reaper": "RUNNING",
            "staleness_sensor": "RUNNING"}
        staging = drops / "_incoming"
        staging.mkdir()
        for f in good + bad:
            shutil.copy(f, staging / f.name)
        (staging / "_READY").touch()
        staging.rename(drops / "e2e-1")
        deadline = time.time() + 300
        while time.time() < deadline:
            if all(_materialized(server, a, "e2e-1") for a in ("videos", "video_metadata", *FEATURES)):
                break
            time.sleep(3)
        else:
            pytest.fail(f"not materialized in time:\n{(tmp_path / 'dagster_dev.log').read_text()[-4000:]}")
        mat = _materialized(server, "video_metadata", "e2e-1")[0]
        md = {e["label"]: e.get("intValue") for e in mat["metadataEntries"]}
        assert md["rows"] == 4 and md["errors"] == 1
        ds = lance.dataset(env["MMFS_TABLE_URI"])
        assert ds.count_rows(filter="metadata_error IS NULL") == 3
        for f in FEATURES:  # the automation followed the metadata with every feature
            assert ds.count_rows(filter=f"{f}_producer IS NOT NULL AND {f}_error IS NULL") == 3, f
        q = "{ runsOrError { ... on Runs { results { status tags { key value } } } } }"
        while time.time() < deadline:  # a run's materialization lands a moment before the run itself ends
            runs = server.gql(q)["runsOrError"]["results"]
            if not any(r["status"] in ("QUEUED", "NOT_STARTED", "STARTING", "STARTED") for r in runs):
                break
            time.sleep(1)
        assert all(r["status"] == "SUCCESS" for r in runs), (
            [(r["status"], {t["key"]: t["value"] for t in r["tags"]}) for r in runs],
            (tmp_path / "dagster_dev.log").read_text()[-4000:],
        )
        sources = {t["value"] for r in runs for t in r["tags"] if t["key"] in ("dagster/sensor_name",)}
        assert sources == {"drop_sensor", "features_automation"}
        _screenshot(server, tmp_path)


def _screenshot(server: DagsterDev, tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    # no "join the Dagster community" modal over the page on a first visit (dagster.yaml: nux disabled)
    assert server.gql("{ shouldShowNux }")["shouldShowNux"] is False
    png = tmp_path / "asset_graph.png"
    subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'chrome'}",
         "--window-size=1400,900", "--virtual-time-budget=20000", f"--screenshot={png}",
         f"{server.url}/asset-groups"],
        check=True, timeout=120, capture_output=True,
    )
    assert png.stat().st_size > 20_000  # a rendered page, not a blank one
    keep = ROOT / ".tmp"
    keep.mkdir(exist_ok=True)
    shutil.copy(png, keep / "asset_graph.png")
