"""Postgres as the Dagster storage: a real server on 127.0.0.1, the shipped deploy/dagster_postgres.yaml,
the real CLI (two drops materialized at once, status, snapshot, maintenance)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import make_drop
from tests.dagster_server import ROOT

pytestmark = pytest.mark.slow


@pytest.fixture
def pg():
    from tests.postgres_server import Postgres, find_bin

    if find_bin() is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql; .ci/run installs it)")
    try:
        import dagster_postgres  # noqa: F401
    except ImportError:
        pytest.skip("dagster-postgres is not installed (pip install -e '.[deploy]' installs it)")
    with Postgres() as server:
        yield server


def _mmfs(env: dict, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mmfs_assets.cli.app", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_the_cli_on_a_postgres_instance(pg, env, fixture_dir, tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "deploy" / "dagster_postgres.yaml", home / "dagster.yaml")
    run_env = {**os.environ, "DAGSTER_HOME": str(home),
               "DAGSTER_PG_URL": f"postgresql+psycopg2://postgres:unused-trust-auth@127.0.0.1:{pg.port}/dagster"}
    good = sorted((fixture_dir / "good").iterdir())
    make_drop(env, "pg-1", good[:2])
    make_drop(env, "pg-2", good[2:4])
    procs = [subprocess.Popen([sys.executable, "-m", "mmfs_assets.cli.app", "materialize", "-p", d, "-s", "videos",
                               "-s", "video_metadata", "--format", "json"], env=run_env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for d in ("pg-1", "pg-2")]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
        assert json.loads(out)["success"]
    # the runs, their events and the per-partition checks live in Postgres, not in SQLite files
    assert int(pg.sql("SELECT count(*) FROM runs WHERE status = 'SUCCESS'", db="dagster")) == 2
    parts = pg.sql("SELECT DISTINCT partition FROM asset_check_executions "
                   "WHERE check_name = 'metadata_decode_failures' ORDER BY 1", db="dagster")
    assert parts.split() == ["pg-1", "pg-2"]
    assert not (home / "history" / "runs.db").exists()
    r = _mmfs(run_env, "status", "--format", "json")
    assert r.returncode == 0, r.stderr
    assert {d["drop_id"]: d["rows"] for d in json.loads(r.stdout)["drops"]} == {"pg-1": 2, "pg-2": 2}
    r = _mmfs(run_env, "snapshot", "create", "pg-snap", "--require", "metadata")
    assert r.returncode == 0, r.stderr
    r = _mmfs(run_env, "maintain", "--format", "json")  # asks the Postgres instance for active writers
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["skipped"] == []
