"""End to end: the real `dagster dev` (webserver + daemon), a folder dropped, ingest, metadata, features,
near-duplicate groups, statistics and search indices materialized by the sensor and the automation, a
snapshot launched as a job, observed through GraphQL; headless Chromium screenshots of the UI (the asset
graph, a partition's checks, the statistics plots, the snapshot run), kept under .tmp/ as test artifacts."""

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
FOLLOWERS = ("dup_group", "drop_stats")  # partitioned assets the automation runs after the features
LAUNCH = """
mutation($p: ExecutionParams!) { launchRun(executionParams: $p) { __typename
  ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
  ... on RunConfigValidationInvalid { errors { message } } } }"""

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
    other = sorted((fixture_dir / "good").iterdir())[3:4]  # a second drop landing at the same moment
    bad = [fixture_dir / "bad" / "garbage.mp4"]
    with DagsterDev(env, tmp_path / "dagster_dev.log") as server:
        sensors = server.gql("{ sensorsOrError(repositorySelector: {repositoryName: \"__repository__\", "
                             "repositoryLocationName: \"mmfs\"}) { ... on Sensors { results { name "
                             "sensorState { status } } } } }")["sensorsOrError"]["results"]
        assert {s["name"]: s["sensorState"]["status"] for s in sensors} == {
            "drop_sensor": "RUNNING", "features_automation": "RUNNING", "dead_run_reaper": "RUNNING",
            "staleness_sensor": "RUNNING"}
        for name, files in (("e2e-0", other), ("e2e-1", good + bad)):
            staging = drops / f"_incoming-{name}"
            staging.mkdir()
            for f in files:
                shutil.copy(f, staging / f.name)
            (staging / "_READY").touch()
        for name in ("e2e-0", "e2e-1"):
            (drops / f"_incoming-{name}").rename(drops / name)
        deadline = time.time() + 420
        while time.time() < deadline:
            if all(_materialized(server, a, d) for a in ("videos", "video_metadata", *FEATURES, *FOLLOWERS)
                   for d in ("e2e-0", "e2e-1")):
                break
            time.sleep(3)
        else:
            pytest.fail(f"not materialized in time:\n{(tmp_path / 'dagster_dev.log').read_text()[-4000:]}")
        mat = _materialized(server, "video_metadata", "e2e-1")[0]
        md = {e["label"]: e.get("intValue") for e in mat["metadataEntries"]}
        assert md["rows"] == 4 and md["errors"] == 1
        ds = lance.dataset(env["MMFS_TABLE_URI"])
        assert ds.count_rows(filter="metadata_error IS NULL AND drop_id = 'e2e-1'") == 3
        for f in FEATURES:  # the automation followed the metadata with every feature
            assert ds.count_rows(filter=f"{f}_producer IS NOT NULL AND {f}_error IS NULL AND drop_id = 'e2e-1'") == 3, f
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
        # per-partition checks: stored under the drop's partition
        checks = server.gql(CHECKS, {"key": ["video_metadata"]})["assetNodeOrError"]["assetChecksOrError"]["checks"]
        by_name = {c["name"]: c["executionForLatestMaterialization"] for c in checks}
        assert by_name["metadata_decode_failures"]["evaluation"]["partition"] == "e2e-1"
        _checks_green(server, deadline)
        _pools_never_overlap(home)
        stats = _materialized(server, "drop_stats", "e2e-1")[0]
        assert {e["label"]: e.get("intValue") for e in stats["metadataEntries"]}["rows"] == 4
        run_id = _snapshot_run(server, deadline)
        ds = lance.dataset(env["MMFS_TABLE_URI"])
        assert "e2e-snap" in ds.tags.list()
        _screenshots(server, tmp_path, {
            "asset_graph": "/asset-groups",
            "partition_checks": "/assets/video_metadata?view=checks",
            "snapshot_run": f"/runs/{run_id}",
        })
        _plots_screenshot(server, tmp_path)


def _plots_screenshot(server: DagsterDev, tmp_path: Path) -> None:
    """The drop_stats plot sits behind "[Show Markdown]" (the UI inlines markdown under 1,000 characters):
    open the partition, click it, and screenshot the dialog once the image has decoded."""
    from tests.cdp_browser import Browser

    with Browser(tmp_path / "chrome-cdp") as b:
        b.open(f"{server.url}/assets/drop_stats?view=partitions&partition=e2e-1", wait_for_text="[Show Markdown]")
        b.click_text("[Show Markdown]")
        b.wait_js("[...document.images].some(i => i.alt.startsWith('statistics of drop e2e-1') && i.complete "
                  "&& i.naturalWidth > 500)")
        time.sleep(2)  # the dialog fades in
        png = tmp_path / "drop_stats_plots.png"
        b.screenshot(png)
    assert png.stat().st_size > 50_000
    keep = ROOT / ".tmp"
    keep.mkdir(exist_ok=True)
    shutil.copy(png, keep / "drop_stats_plots.png")


CHECKS = """
query($key: [String!]!) { assetNodeOrError(assetKey: {path: $key}) { ... on AssetNode {
  assetChecksOrError { ... on AssetChecks { checks { name
    executionForLatestMaterialization { status evaluation { partition description } } } } } } } }"""


def _pools_never_overlap(home: Path) -> None:
    """Under the real daemon, pools are enforced per run by the run queue: the two drops' ingest runs
    (`lance_ingest`) and their fill runs (`gpu`) ran one after the other, never at the same time."""
    import os

    import dagster as dg

    old = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = str(home)
    try:
        with dg.DagsterInstance.get() as inst:
            records = inst.get_run_records()
    finally:
        if old is None:
            os.environ.pop("DAGSTER_HOME")
        else:
            os.environ["DAGSTER_HOME"] = old
    for pool in ("lance_ingest", "gpu"):
        spans = sorted((r.start_time, r.end_time) for r in records if r.dagster_run.run_op_concurrency
                       and pool in r.dagster_run.run_op_concurrency.all_pools)
        assert len(spans) >= 2, (pool, spans)  # both drops ran a run of this pool
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), (pool, spans)


def _checks_green(server: DagsterDev, deadline: float) -> None:
    """Issue 25.4: a drop whose only damaged file video_metadata quarantined shows every feature check green
    (the quarantined row is not the features' error), and every ``<asset>_current`` check has a result for
    the asset's latest materialization (the staleness_sensor evaluates it within its minute), so the UI
    shows no "Not evaluated" and no failed check for a good drop."""
    states: dict = {}
    while time.time() < deadline + 90:
        states = {}
        for asset in ("video_metadata", *FEATURES):
            checks = server.gql(CHECKS, {"key": [asset]})["assetNodeOrError"]["assetChecksOrError"]["checks"]
            states.update({c["name"]: c["executionForLatestMaterialization"] for c in checks})
        if all(e is not None and e["status"] == "SUCCEEDED" for name, e in states.items()
               if name != "metadata_decode_failures"):  # 1 of 4 files is garbage: that check says so (WARN)
            break
        time.sleep(3)
    bad = {n: e and e["status"] for n, e in states.items() if n != "metadata_decode_failures"
           and (e is None or e["status"] != "SUCCEEDED")}
    assert not bad, bad
    for f in FEATURES:
        ev = states[f"{f}_values"]["evaluation"]
        if ev["partition"] == "e2e-1":  # the drop with the garbage file (the other drop is clean)
            assert "1 rows quarantined by video_metadata not counted" in ev["description"]
        assert states[f"{f}_current"]["evaluation"]["partition"] is None  # one result for the whole asset


def _snapshot_run(server: DagsterDev, deadline: float) -> str:
    """Launch snapshot_job as a user would from the Launchpad; wait for it to succeed."""
    params = {"selector": {"repositoryLocationName": "mmfs", "repositoryName": "__repository__", "jobName": "snapshot_job"},
              "runConfigData": {"ops": {"create_snapshot": {"config": {"name": "e2e-snap", "require": ["clip_embedding"]}}}}}
    res = server.gql(LAUNCH, {"p": params})["launchRun"]
    assert res["__typename"] == "LaunchRunSuccess", res
    run_id = res["run"]["runId"]
    status = None
    while time.time() < deadline + 120:
        status = server.gql("query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }", {"id": run_id})["runOrError"]["status"]
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            break
        time.sleep(1)
    assert status == "SUCCESS", status
    return run_id


def _screenshots(server: DagsterDev, tmp_path: Path, pages: dict[str, str]) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    # no "join the Dagster community" modal over the page on a first visit (dagster.yaml: nux disabled)
    assert server.gql("{ shouldShowNux }")["shouldShowNux"] is False
    keep = ROOT / ".tmp"
    keep.mkdir(exist_ok=True)
    for name, path in pages.items():
        png = tmp_path / f"{name}.png"
        subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'chrome'}",
             "--window-size=1400,1000", "--virtual-time-budget=20000", f"--screenshot={png}", f"{server.url}{path}"],
            check=True, timeout=120, capture_output=True,
        )
        assert png.stat().st_size > 20_000, name  # a rendered page, not a blank one
        shutil.copy(png, keep / f"{name}.png")
