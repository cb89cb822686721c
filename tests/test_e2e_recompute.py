"""End to end: bump a feature's code version, see its partition go stale in the real `dagster dev`, and
recompute it with a backfill launched through GraphQL `launchPartitionBackfill` (run by the daemon)."""

from __future__ import annotations

import shutil
import time

import dagster as dg
import lance
import pytest

from mmfs_assets.cli.run import materialize_drop
from mmfs_assets.settings import Settings
from tests.conftest import make_drop
from tests.dagster_server import ROOT, DagsterDev

pytestmark = pytest.mark.slow

LOCATION = '''\
import dataclasses

from mmfs_assets.definitions import build_definitions
from mmfs_assets.features import discover

BUMP = {bump!r}
defs = build_definitions(
    [dataclasses.replace(f, code_version=f.code_version + BUMP) if f.name == "quality" else f for f in discover()]
)
'''
STALE = """
query($key: [String!]!, $p: [String!]!) {
  assetNodeOrError(assetKey: {path: $key}) {
    ... on AssetNode { staleStatusByPartition(partitions: $p) staleCausesByPartition(partitions: $p) { reason } }
  }
}"""
CHECK = """
query($key: [String!]!, $name: String!) {
  assetCheckExecutions(assetKey: {path: $key}, checkName: $name, limit: 1) {
    evaluation { success description metadataEntries { label ... on IntMetadataEntry { intValue }
                                                        ... on MarkdownMetadataEntry { mdStr } } }
  }
}"""
RELOAD = """
mutation { reloadRepositoryLocation(repositoryLocationName: "mmfs") {
  __typename ... on WorkspaceLocationEntry { loadStatus } } }"""


def _current_check(server: DagsterDev, asset: str, deadline: float, passed: bool) -> dict:
    """The latest ``<asset>_current`` evaluation (reported by the staleness_sensor) once it says ``passed``."""
    while True:
        runs = server.gql(CHECK, {"key": [asset], "name": f"{asset}_current"})["assetCheckExecutions"]
        ev = runs[0]["evaluation"] if runs else None
        if ev is not None and ev["success"] is passed:
            return {e["label"]: e.get("intValue", e.get("mdStr")) for e in ev["metadataEntries"]}
        assert time.time() < deadline, f"{asset}_current never became {passed}: {ev}"
        time.sleep(3)


def _stale(server: DagsterDev, asset: str, key: str) -> tuple[str, list[str]]:
    node = server.gql(STALE, {"key": [asset], "p": [key]})["assetNodeOrError"]
    return node["staleStatusByPartition"][0], [c["reason"] for c in node["staleCausesByPartition"][0]]


def test_code_version_bump_goes_stale_and_a_graphql_backfill_recomputes(tmp_path, monkeypatch, fixture_dir, model_dir):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    env = {
        "DAGSTER_HOME": str(home),
        "MMFS_TABLE_URI": str(tmp_path / "videos.lance"),
        "MMFS_DROP_DIR": str(tmp_path / "drops"),
        "MMFS_MODEL_PROFILE": "tiny",
        "MMFS_MODEL_DIR": str(model_dir),
        "MMFS_WORKSPACE": str(tmp_path / "workspace.yaml"),
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    settings = Settings.from_env()
    good = sorted((fixture_dir / "good").iterdir())[:3]
    make_drop(settings, "rc-1", good)
    with dg.DagsterInstance.get() as instance:  # the drop, fully materialized at code version quality-v1
        assert materialize_drop("rc-1", None, instance, settings).success
    location = tmp_path / "location.py"
    location.write_text(LOCATION.format(bump=""))
    (tmp_path / "workspace.yaml").write_text(
        f"load_from:\n  - python_file:\n      relative_path: {location}\n      location_name: mmfs\n")
    ds = lance.dataset(settings.table_uri)
    v1 = set(ds.to_table(columns=["quality_producer"])["quality_producer"].to_pylist())
    assert len(v1) == 1 and next(iter(v1)).startswith("quality:quality-v1|")

    with DagsterDev(env, tmp_path / "dagster_dev.log") as server:
        assert _stale(server, "quality", "rc-1")[0] == "FRESH"
        location.write_text(LOCATION.format(bump="-b2"))  # a new model version of the feature
        assert server.gql(RELOAD)["reloadRepositoryLocation"]["loadStatus"] == "LOADED"
        status, causes = _stale(server, "quality", "rc-1")
        assert status == "STALE" and any("code version" in c for c in causes), causes
        assert _stale(server, "clip_embedding", "rc-1")[0] == "FRESH"  # only the changed feature
        # the graph and the asset page show it too: the staleness_sensor fails the quality_current check
        md = _current_check(server, "quality", time.time() + 180, passed=False)
        assert md["stale_rows"] == 3 and md["stale_partitions"] == 1
        assert "`rc-1` | 3 | code version quality-v1 -> quality-v1-b2" in md["stale"], md

        status = server.backfill(["quality"], ["rc-1"], timeout=300)
        assert status in ("COMPLETED", "COMPLETED_SUCCESS"), status
        assert _stale(server, "quality", "rc-1")[0] == "FRESH"

    t = lance.dataset(settings.table_uri).to_table(columns=["quality_producer", "quality_error", "sharpness"])
    producers = set(t["quality_producer"].to_pylist())
    assert len(producers) == 1 and next(iter(producers)).startswith("quality:quality-v1-b2|")
    assert t["quality_error"].null_count == 3 and t["sharpness"].null_count == 0
