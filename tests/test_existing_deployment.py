"""MMFS as one code location of a team's own Dagster deployment (docs/existing-dagster.md).

The team's instance has its own dagster.yaml (not MMFS's), its own workspace with its own code location
beside MMFS's, and is started with plain `dagster dev` (not MMFS's launcher). A drop lands: MMFS's sensor,
automation and assets fill it through that instance; the team's asset still runs; `mmfs materialize` against
that instance records its run there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import lance
import pytest

from tests.dagster_server import ROOT, DagsterDev

pytestmark = pytest.mark.slow
ASSETS = ("videos", "video_metadata", "clip_embedding", "depth", "caption", "quality")

TEAM_DEFS = textwrap.dedent('''
    import dagster as dg

    @dg.asset(pool="team_pool")
    def team_report() -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata={"rows": 3})

    defs = dg.Definitions(assets=[team_report])
''')

# the team's instance: their run queue, their pools (run granularity, as docs/existing-dagster.md asks)
TEAM_INSTANCE = textwrap.dedent('''
    telemetry:
      enabled: false
    nux:
      enabled: false
    concurrency:
      runs:
        max_concurrent_runs: 3
      pools:
        default_limit: 1
        granularity: run
    run_queue:
      dequeue_interval_seconds: 1
''')

MATS = """query($key: [String!]!) { assetNodeOrError(assetKey: {path: $key}) {
  ... on AssetNode { assetMaterializations { partition runId } } } }"""
LAUNCH = """mutation($p: ExecutionParams!) { launchRun(executionParams: $p) { __typename
  ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }"""


def test_mmfs_beside_a_team_code_location_in_their_instance(tmp_path, fixture_dir, model_dir):
    team = tmp_path / "team"
    team.mkdir()
    (team / "team_defs.py").write_text(TEAM_DEFS)
    home = team / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(TEAM_INSTANCE)
    (team / "workspace.yaml").write_text(textwrap.dedent(f"""
        load_from:
          - python_file:
              relative_path: team_defs.py
              location_name: team
          - python_module:
              module_name: mmfs_assets.definitions
              attribute: defs
              location_name: mmfs
              working_directory: {ROOT}
    """))
    drops = tmp_path / "drops"
    drops.mkdir()
    env = {
        "DAGSTER_HOME": str(home),
        "MMFS_TABLE_URI": str(tmp_path / "videos.lance"),
        "MMFS_DROP_DIR": str(drops),
        "MMFS_MODEL_PROFILE": "tiny",
        "MMFS_MODEL_DIR": str(model_dir),
        "MMFS_LOCK_DIR": str(tmp_path / "locks"),
    }
    dagster = str(Path(sys.executable).parent / "dagster")
    before = (home / "dagster.yaml").read_text()
    with DagsterDev(env, tmp_path / "dev.log", command=[dagster, "dev", "-w", str(team / "workspace.yaml")],
                    cwd=team) as server:
        names = {e["name"] for e in server.gql("{ workspaceOrError { ... on Workspace { locationEntries { name } } } }")
                 ["workspaceOrError"]["locationEntries"]}
        assert names == {"team", "mmfs"}
        staging = drops / "_incoming"
        staging.mkdir()
        for f in sorted((fixture_dir / "good").iterdir())[:2]:
            shutil.copy(f, staging / f.name)
        (staging / "_READY").touch()
        staging.rename(drops / "team-1")
        params = {"selector": {"repositoryLocationName": "team", "repositoryName": "__repository__",
                               "jobName": "__ASSET_JOB"}}
        res = server.gql(LAUNCH, {"p": params})["launchRun"]
        assert res["__typename"] == "LaunchRunSuccess", res
        deadline = time.time() + 420
        while time.time() < deadline:
            done = {a: any(m["partition"] == "team-1" for m in server.gql(MATS, {"key": [a]})["assetNodeOrError"]
                          ["assetMaterializations"]) for a in ASSETS}
            team_done = bool(server.gql(MATS, {"key": ["team_report"]})["assetNodeOrError"]["assetMaterializations"])
            if all(done.values()) and team_done:
                break
            time.sleep(3)
        else:
            pytest.fail(f"not materialized in time ({done}, team: {team_done}):\n{(tmp_path / 'dev.log').read_text()[-4000:]}")
    ds = lance.dataset(env["MMFS_TABLE_URI"])
    assert ds.count_rows(filter="clip_embedding_producer IS NOT NULL AND clip_embedding_error IS NULL") == 2
    assert (home / "dagster.yaml").read_text() == before  # MMFS never rewrites the team's instance config

    # the CLI against the team's instance: its run is recorded there, beside the daemon's runs
    for f in sorted((fixture_dir / "good").iterdir())[2:3]:
        (drops / "team-2").mkdir()
        shutil.copy(f, drops / "team-2" / f.name)
    r = subprocess.run([sys.executable, "-m", "mmfs_assets.cli.app", "materialize", "-p", "team-2", "-s", "videos"],
                       cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    import dagster as dg

    os.environ["DAGSTER_HOME"] = str(home)
    with dg.DagsterInstance.get() as inst:
        runs = inst.get_runs()
        cli = [x for x in runs if x.tags.get("mmfs/launched_by") == "cli"]
        assert len(cli) == 1 and cli[0].status == dg.DagsterRunStatus.SUCCESS
        assert any(x.job_name == "__ASSET_JOB" and x.tags.get("dagster/partition") == "team-1" for x in runs)
