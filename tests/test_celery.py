"""MMFS_EXECUTOR=celery: a backfill over four drops run by the daemon, its steps executed by two Celery
workers through a real Redis.

Redis (Debian's redis-server, with a password), the workers (``celery -A mmfs_assets.celery_app worker``) and
`dagster dev` (webserver + daemon) run on 127.0.0.1 in their own process groups and are stopped by their
process ids. The backfill (ingest, metadata and two features over four partitions) is launched through
GraphQL as the UI launches it; the table must hold every value from the right producers, both workers must
have executed steps, and the broker password must be neither under $DAGSTER_HOME nor in what the UI shows.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys

import lance
import pytest

from mmfs_assets import samples
from tests.dagster_server import ROOT

pytestmark = pytest.mark.slow
PASSWORD = "celery-SEKRET-9f3a"
DROPS = ["c-1", "c-2", "c-3", "c-4"]
SELECT = "videos,video_metadata,clip_embedding,quality"


@pytest.fixture
def redis(tmp_path):
    pytest.importorskip("dagster_celery", reason="dagster-celery is not installed (the pipeline extra installs it)")
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server; .ci/run installs it)")
    from tests.redis_server import Redis

    with Redis(tmp_path / "redis", PASSWORD) as server:
        yield server


def _worker(name: str, env: dict, log) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "mmfs_assets.celery_app", "worker", "-Q", "dagster", "--pool", "solo",
         "-n", f"{name}@%h", "--loglevel", "INFO", "--without-gossip", "--without-mingle", "--without-heartbeat"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


SENSORS = """{ sensorsOrError(repositorySelector: {repositoryName: "__repository__", repositoryLocationName: "mmfs"}) {
  ... on Sensors { results { id name sensorState { status } } } } }"""
STOP = "mutation($id: String!) { stopSensor(id: $id) { __typename } }"


def test_a_backfill_through_the_daemon_runs_on_two_celery_workers(redis, tmp_path, model_dir):
    """A backfill of four partitions and four assets (ingest, metadata, two features), launched as the UI
    launches it and run by the daemon, whose runs send every step to the Celery workers."""
    from tests.dagster_server import DagsterDev
    from tests.test_secrets import _hits

    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    drops = tmp_path / "drops"
    for i, d in enumerate(DROPS):
        (drops / d).mkdir(parents=True)
        for j in range(2):
            name = f"{d}_{j}.mp4"
            samples.write_video(drops / d / name, samples.Spec(name, 64 + 32 * j, 48 + 16 * i, 12, 1.0))
    env = {"DAGSTER_HOME": str(home), "MMFS_TABLE_URI": str(tmp_path / "videos.lance"),
           "MMFS_DROP_DIR": str(drops), "MMFS_DROP_QUIET_SECONDS": "3600", "MMFS_MODEL_PROFILE": "tiny",
           "MMFS_MODEL_DIR": str(model_dir), "MMFS_EXECUTOR": "celery", "MMFS_CELERY_BROKER": f"{redis.url}/0",
           "MMFS_CELERY_BACKEND": f"{redis.url}/1", "MMFS_CLIP_FRAMES": "2", "MMFS_DECODE_WORKERS": "1"}
    full_env = {**os.environ, **env}
    init = subprocess.run([sys.executable, "-c", (
        "from mmfs_assets.instance.home import open_instance\n"
        f"with open_instance() as i: i.add_dynamic_partitions('drops', {DROPS!r})")], env=full_env, cwd=ROOT,
        capture_output=True, text=True, timeout=120)
    assert init.returncode == 0, init.stderr
    logs = {n: open(tmp_path / f"{n}.log", "wb") for n in ("w1", "w2")}
    workers = [_worker(n, full_env, f) for n, f in logs.items()]
    try:
        with DagsterDev(env, tmp_path / "dagster_dev.log") as server:
            # only the backfill runs here: the automation would otherwise fill features in runs of its own
            for s in server.gql(SENSORS)["sensorsOrError"]["results"]:
                if s["name"] in ("features_automation", "drop_sensor"):
                    assert server.gql(STOP, {"id": s["id"]})["stopSensor"]["__typename"] == "StopSensorMutationResult"
            status = server.backfill(SELECT.split(","), DROPS, timeout=900)
            runs = server.gql("{ runsOrError { ... on Runs { results { status runConfigYaml tags { key value } } } } }")[
                "runsOrError"]["results"]
            ui = str(runs)
    finally:
        for w in workers:
            _stop(w)
        for f in logs.values():
            f.close()
    assert status in ("COMPLETED", "COMPLETED_SUCCESS"), (status, (tmp_path / "dagster_dev.log").read_text()[-4000:],
                                                          (tmp_path / "w1.log").read_text()[-3000:])
    assert len(runs) == len(DROPS) and all(r["status"] == "SUCCESS" for r in runs)
    assert all(any(t["key"] == "dagster/backfill" for t in r["tags"]) for r in runs)  # the daemon's backfill runs
    ds = lance.dataset(env["MMFS_TABLE_URI"])
    t = ds.to_table(columns=["drop_id", "clip_embedding", "clip_embedding_producer", "quality_producer", "metadata_error",
                             "clip_embedding_error"]).to_pylist()
    assert sorted(r["drop_id"] for r in t) == sorted(DROPS * 2)
    assert all(r["metadata_error"] is None and r["clip_embedding_error"] is None and r["clip_embedding"] for r in t)
    assert {r["clip_embedding_producer"].split("|")[0] for r in t} == {"clip_embedding:clip-v1"}
    assert all("|profile=tiny" in r["clip_embedding_producer"] and r["quality_producer"].startswith("quality:") for r in t)
    done = {n: len(re.findall(r"Task execute_plan\[[0-9a-f-]+\] succeeded in", (tmp_path / f"{n}.log").read_text()))
            for n in ("w1", "w2")}
    # per run: four asset steps and the <asset>_current checks of three of them, spread over both workers
    assert sum(done.values()) == len(DROPS) * (4 + 3) and all(done.values()), done
    assert _hits(home, [PASSWORD]) == [] and PASSWORD not in ui  # read from the environment, never stored or shown
