"""End to end with the ``ray`` engine under the real `dagster dev` (webserver + daemon) and the CLI: a UI
backfill of four drops is ONE run recording four materializations, terminating a run stops its replicas
(none left computing) and a re-run finishes the rest, and ``MMFS_FILL_ENGINE=ray mmfs materialize`` fills a
drop on two replicas of a local Ray."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg
import lance
import pytest

from mmfs_assets import samples
from mmfs_assets.cli.run import materialize_drop
from mmfs_assets.settings import Settings
from tests.dagster_server import ROOT, DagsterDev

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="the ray extra is not installed")]

LOCATION = '''\
import os

from mmfs_assets.definitions import build_definitions
from mmfs_assets.features import discover
from tests.ray_features import slow

defs = build_definitions([slow(f, os.environ["MMFS_TEST_STARTED"], os.environ["MMFS_TEST_SLOW"]) if f.name == "quality"
                          else f for f in discover()])
'''
BACKFILL_RUNS = "query($id: String!) { partitionBackfillOrError(backfillId: $id) { ... on PartitionBackfill { runs { runId } } } }"
RUN = "query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }"
TERMINATE = """mutation($id: String!) { terminateRun(runId: $id) { __typename
  ... on TerminateRunFailure { message } ... on PythonError { message } } }"""
LAUNCH = """mutation($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) {
  __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def _replica_processes() -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if b"ShardReplica" in (p / "cmdline").read_bytes() and _alive(int(p.name)):
                    out.append(int(p.name))
            except OSError:
                pass
    return out


def _wait(pred, timeout: float, what: str, log: Path):
    deadline = time.time() + timeout
    while True:
        v = pred()
        if v:
            return v
        assert time.time() < deadline, f"{what}\n{log.read_text()[-4000:]}"
        time.sleep(1)


def _drop(root: Path, key: str, n: int, offset: float) -> None:
    d = root / key
    d.mkdir(parents=True)
    for i in range(n):
        samples.write_video(d / f"{key}{i}.mp4", samples.Spec(f"{key}{i}", 64, 48, 10, 1.0 + 0.1 * i + offset))
    (d / "_READY").touch()


def test_ray_engine_under_dagster_dev_backfill_cancel_and_cli(tmp_path, monkeypatch, model_dir):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    ray_tmp = tempfile.mkdtemp(prefix="mmfsray", dir="/tmp")  # short: Ray's unix sockets live under it
    slow_file, started = tmp_path / "slow-seconds", tmp_path / "computing"
    env = {
        "DAGSTER_HOME": str(home), "MMFS_TABLE_URI": str(tmp_path / "videos.lance"), "MMFS_DROP_DIR": str(tmp_path / "drops"),
        "MMFS_MODEL_PROFILE": "tiny", "MMFS_MODEL_DIR": str(model_dir), "MMFS_WORKSPACE": str(tmp_path / "workspace.yaml"),
        "MMFS_FILL_ENGINE": "ray", "RAY_TMPDIR": ray_tmp, "MMFS_FILL_CHUNK_ROWS": "2", "MMFS_FRAGMENT_ROWS": "4", "MMFS_DROP_QUIET_SECONDS": "0",
        "MMFS_TEST_SLOW": str(slow_file), "MMFS_TEST_STARTED": str(started),
        "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    settings = Settings.from_env()
    keys = ["r1", "r2", "r3", "r4"]
    for j, key in enumerate([*keys, "r5"]):
        _drop(tmp_path / "drops", key, 8 if key == "r5" else 2 + j % 2, 2.0 * j)
    with dg.DagsterInstance.get() as instance:  # ingest + metadata (the feature fills come from the UI below)
        for key in [*keys, "r5"]:
            assert materialize_drop(key, ["videos", "video_metadata"], instance, settings).success
    (tmp_path / "workspace.yaml").write_text(
        f"load_from:\n  - python_file:\n      relative_path: {tmp_path / 'location.py'}\n      location_name: mmfs\n")
    (tmp_path / "location.py").write_text(LOCATION)
    log = tmp_path / "dagster_dev.log"
    try:
        with DagsterDev(env, log) as server:
            # 1. a backfill of four drops launched as the UI does: one run, four materializations
            bid = _launch(server, keys)
            status = _wait(lambda: _status(server, bid), 420, "backfill never finished", log)
            assert status in ("COMPLETED", "COMPLETED_SUCCESS"), status
            runs = server.gql(BACKFILL_RUNS, {"id": bid})["partitionBackfillOrError"]["runs"]
            assert len(runs) == 1  # a single-run backfill
            with dg.DagsterInstance.get() as instance:
                assert sorted(instance.get_materialized_partitions(dg.AssetKey("quality"))) == keys
                ev = instance.get_latest_materialization_event(dg.AssetKey("quality"))
                md = ev.asset_materialization.metadata
                assert md["partitions_in_run"].value == 4 and md["engine"].value == "ray" and md["replicas"].value == 2
                run_log = [e.message for e in instance.all_logs(runs[0]["runId"]) if e.message]
            assert any("shards" in m and "done" in m for m in run_log), run_log[-20:]  # shard progress in the run's log

            # 2. terminate a run while its replicas compute: none is left computing, a re-run finishes the rest
            slow_file.write_text("3")
            bid = _launch(server, ["r5"])
            pids = _wait(lambda: [int(p.name) for p in started.iterdir()] if started.exists() else [], 300,
                         "no replica started computing", log)
            (run,) = _wait(lambda: server.gql(BACKFILL_RUNS, {"id": bid})["partitionBackfillOrError"]["runs"], 60,
                           "no run", log)
            out = server.gql(TERMINATE, {"id": run["runId"]})["terminateRun"]
            assert out["__typename"] == "TerminateRunSuccess", out
            _wait(lambda: server.gql(RUN, {"id": run["runId"]})["runOrError"]["status"] == "CANCELED", 120,
                  "the run was not cancelled", log)
            _wait(lambda: not any(_alive(p) for p in pids) and not _replica_processes(), 60,
                  f"replicas still running after the cancel: {_replica_processes()}", log)
            slow_file.unlink()
            bid = _launch(server, ["r5"])
            status = _wait(lambda: _status(server, bid), 300, "the re-run never finished", log)
            assert status in ("COMPLETED", "COMPLETED_SUCCESS"), status
        t = lance.dataset(settings.table_uri).to_table(columns=["quality_producer", "sharpness"])
        assert t["quality_producer"].null_count == 0 and t["sharpness"].null_count == 0 and len(t) == 18

        # 3. the CLI, as the README says: MMFS_FILL_ENGINE=ray mmfs materialize -p DROP -s clip_embedding
        cli = subprocess.run([str(Path(sys.executable).parent / "mmfs"), "materialize", "-p", "r5", "-s", "clip_embedding"],
                             env={**os.environ}, capture_output=True, text=True, timeout=400, cwd=tmp_path)
        assert cli.returncode == 0, cli.stdout[-3000:] + cli.stderr[-3000:]
        with dg.DagsterInstance.get() as instance:
            md = instance.get_latest_materialization_event(dg.AssetKey("clip_embedding")).asset_materialization.metadata
        assert md["engine"].value == "ray" and md["replicas"].value == 2 and md["shards"].value >= 2
        assert md["rows_computed"].value == 8
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert not _replica_processes()


def _launch(server: DagsterDev, partitions: list[str]) -> str:
    params = {"assetSelection": [{"path": ["quality"]}], "partitionNames": partitions, "fromFailure": False}
    out = server.gql(LAUNCH, {"params": params})["launchPartitionBackfill"]
    assert out["__typename"] == "LaunchBackfillSuccess", out
    return out["backfillId"]


def _status(server: DagsterDev, bid: str) -> str | None:
    q = "query($id: String!) { partitionBackfillOrError(backfillId: $id) { ... on PartitionBackfill { status } } }"
    status = server.gql(q, {"id": bid})["partitionBackfillOrError"]["status"]
    return status if status.startswith("COMPLETED") or status in ("FAILED", "CANCELED") else None
