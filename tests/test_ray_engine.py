"""The ``ray`` fill engine on a real local Ray (2 CPUs, 127.0.0.1, started and stopped here by the product's
own :func:`~mmfs_assets.engine.ray_cluster.ray_session`): shards on two replicas give the local engine's
values, every fragment written exactly once, a replica killed mid-shard costs a retry and nothing else, and
a single-run backfill of four partitions records four materializations."""

from __future__ import annotations

import collections
import importlib.util
import os
import shutil
import sys

import dagster as dg
import lance
import numpy as np
import pytest

from mmfs_assets import samples
from mmfs_assets.engine.engines import fill_partitions
from mmfs_assets.engine.fill_options import FillOptions, ModelSettings
from mmfs_assets.features import discover
from mmfs_assets.settings import Settings
from mmfs_loader.contract import leases
from mmfs_loader.contract.schema import producer_model
from mmfs_loader.contract.table import TableRef
from tests.features_util import build_table
from tests.ray_features import killer

# not imported here: the engine imports Ray itself, after choosing its single-node (loopback) mode
pytestmark = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="the ray extra is not installed")

FEATURES = {f.name: f for f in discover()}


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    """One local Ray for the module, as the engine starts it (then reused by every fill of the module)."""
    from mmfs_assets.engine.ray_cluster import ray_session

    assert "ray" not in sys.modules, "Ray was imported before the engine chose how to start it"
    with ray_session(Settings.from_env({})) as r:
        assert r.cluster_resources()["CPU"] >= 1
        yield r
    assert not r.is_initialized()


def _listening(pids: set[int]) -> list[tuple[str, int]]:
    """(hex address, port) of the TCP sockets ``pids`` listen on (from /proc/net/tcp{,6} and their fds)."""
    inodes = {}
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes[link[8:-1]] = pid
        except OSError:
            pass
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in open(table).read().splitlines()[1:]:
            f = line.split()
            if f[3] == "0A" and f[9] in inodes:  # LISTEN
                addr, port = f[1].split(":")
                out.append((addr, int(port, 16)))
    return out


def _tree(root: int) -> set[int]:
    kids: dict[int, list[int]] = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                ppid = int(open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(p))
    out, todo = set(), [root]
    while todo:
        pid = todo.pop()
        out.add(pid)
        todo += kids.get(pid, [])
    return out


def test_the_local_ray_listens_on_loopback_only_with_no_dashboard(local_ray):
    assert local_ray.util.get_node_ip_address() == "127.0.0.1"
    addrs = _listening(_tree(os.getpid()) - {os.getpid()})  # Ray's daemons and workers, started by the engine
    assert addrs, "found none of Ray's listening sockets"
    loopback = {"0100007F", "00000000000000000000000001000000", "0000000000000000FFFF00000100007F"}
    assert {a for a, _ in addrs} <= loopback, addrs  # 127.0.0.1 (or ::1), never 0.0.0.0 or the machine's address
    assert 8265 not in {port for _, port in addrs}  # no dashboard


@pytest.fixture
def drops(tmp_path) -> dict:
    out = {}
    for j, key in enumerate(("A", "B")):
        d = tmp_path / "drops" / key
        d.mkdir(parents=True)
        for i in range(6 if key == "A" else 4):
            samples.write_video(d / f"{key}{i}.mp4", samples.Spec(f"{key}{i}", 64, 48, 10, 1.0 + 0.1 * i + 2 * j))
        out[key] = d
    return out


def _table(tmp_path, drops, name="t.lance") -> str:
    uri = str(tmp_path / name)
    build_table(uri, drops, fragment_rows=2)  # A: 3 fragments, B: 2
    return uri


def _fill(uri, feature, keys, engine, model_dir, **opts):
    models = ModelSettings("tiny", str(model_dir), "cpu", {})
    settings = Settings.from_env({"MMFS_FILL_ENGINE": engine, **{k: str(v) for k, v in opts.pop("env", {}).items()}})
    return fill_partitions(TableRef(uri), feature, keys, engine=engine, models=models, settings=settings,
                           options=FillOptions({"mmfs.asset": feature.name}, chunk_rows=2, **opts), log=lambda m: None)


def writes_per_fragment(uri: str, asset: str, since: int) -> collections.Counter:
    """How many commits after version ``since`` replaced each fragment's ``asset`` columns."""
    ds = lance.dataset(uri)
    n: collections.Counter = collections.Counter()
    for v in range(since + 1, ds.version + 1):
        tx = ds.read_transaction(v)
        if tx is not None and (tx.transaction_properties or {}).get("mmfs.asset") == asset:
            n.update(r.fragment_id for r in tx.operation.replacements)
    return n


def _values(uri, cols):
    return sorted(lance.dataset(uri).to_table(columns=["id", *cols]).to_pylist(), key=lambda r: r["id"])


@pytest.mark.parametrize("name", ["quality", "clip_embedding"])
def test_sharded_fill_matches_local_and_writes_every_fragment_once(local_ray, tmp_path, drops, model_dir, name):
    feature = FEATURES[name]
    uri = _table(tmp_path, drops)
    local = str(tmp_path / "local.lance")
    shutil.copytree(uri, local)
    v0 = lance.dataset(uri).version
    out = _fill(uri, feature, ["A", "B"], "ray", model_dir, env={"MMFS_FILL_FRAGMENTS_PER_SHARD": 1})
    ref = _fill(local, feature, ["A", "B"], "local", model_dir)
    assert out.problems == {} and out.producer == ref.producer
    assert ("|profile=tiny" in out.producer) == (feature.build_tiny is not None)
    reps = out.reports
    assert reps["A"].engine == "ray" and reps["A"].replicas == 2 and reps["A"].shards == 3 and reps["B"].shards == 2
    assert reps["A"].rows_written == 6 and reps["B"].rows_written == 4 and reps["A"].rows_in_partition == 6
    assert writes_per_fragment(uri, name, v0) == {0: 1, 1: 1, 2: 1, 3: 1, 4: 1}  # each row written exactly once
    cols = [c for c in feature.group.columns if not c.endswith("_error")]
    got, want = _values(uri, cols), _values(local, cols)
    # each row's producer is the local fill's (under sampling=auto it names the mode the row got)
    assert [r[f"{name}_producer"] for r in got] == [r[f"{name}_producer"] for r in want]
    assert {producer_model(r[f"{name}_producer"]) for r in got} == {producer_model(out.producer)}
    for g, w in zip(got, want):
        for c in cols:
            if isinstance(g[c], list) and g[c] and isinstance(g[c][0], float):
                np.testing.assert_allclose(g[c], w[c], rtol=1e-5, atol=1e-6)  # torch threads differ per process
            else:
                assert g[c] == w[c], c
    assert leases.leases(TableRef(uri)) == []  # the driver's and the replicas' leases are gone
    again = _fill(uri, feature, ["A", "B"], "ray", model_dir)  # resumable: nothing left to do
    assert sum(r.rows_written for r in again.reports.values()) == 0
    assert sum(r.rows_already_current for r in again.reports.values()) == 10


@pytest.mark.parametrize("force", [False, True])
def test_replica_killed_mid_shard_runs_the_shard_again(local_ray, tmp_path, drops, model_dir, force):
    feature = FEATURES["quality"]
    uri = _table(tmp_path, drops)
    if force:  # a forced recompute: rows are current before, so "already written" must come from the retry's plan
        _fill(uri, feature, ["A", "B"], "local", model_dir)
    v0 = lance.dataset(uri).version
    marker = str(tmp_path / "killed-once")
    out = _fill(uri, killer(feature, marker, at_call=2), ["A", "B"], "ray", model_dir, force=force,
                env={"MMFS_FILL_FRAGMENTS_PER_SHARD": 3})  # A is one shard of 3 fragments: killed after its first
    assert out.problems == {}
    assert sum(r.shard_retries for r in out.reports.values()) == 1
    assert writes_per_fragment(uri, "quality", v0) == {0: 1, 1: 1, 2: 1, 3: 1, 4: 1}  # nothing lost, nothing twice
    t = lance.dataset(uri).to_table(columns=["quality_producer", "sharpness"])
    assert t["quality_producer"].null_count == 0 and t["sharpness"].null_count == 0
    assert leases.leases(TableRef(uri)) == []  # the dead replica's lease was released by the driver


def test_a_shard_out_of_retries_leaves_its_rows_for_the_next_run(local_ray, tmp_path, drops, model_dir):
    feature = FEATURES["quality"]
    uri = _table(tmp_path, drops)
    out = _fill(uri, killer(feature, str(tmp_path / "once"), at_call=1), ["A", "B"], "ray", model_dir,
                env={"MMFS_FILL_FRAGMENTS_PER_SHARD": 3, "MMFS_SHARD_RETRIES": 0})
    assert set(out.problems) <= {"A", "B"} and len(out.problems) == 1
    (bad,) = out.problems
    assert "replica died 1 times" in out.problems[bad]
    done = _fill(uri, feature, ["A", "B"], "ray", model_dir)  # a plain re-run finishes exactly the rest
    assert done.problems == {} and done.reports[bad].rows_written == (6 if bad == "A" else 4)
    assert sum(r.rows_written for k, r in done.reports.items() if k != bad) == 0


def test_single_run_backfill_of_four_partitions_records_four_materializations(local_ray, tmp_path, model_dir,
                                                                             monkeypatch):
    from mmfs_assets.defs.features.feature_assets import feature_asset
    from mmfs_assets.resources import build_resources

    keys = ["d1", "d2", "d3", "d4"]
    drops = {}
    for j, key in enumerate(keys):
        d = tmp_path / "drops" / key
        d.mkdir(parents=True)
        for i in range(2 + j % 2):
            samples.write_video(d / f"{key}{i}.mp4", samples.Spec(f"{key}{i}", 64, 48, 10, 1.0 + 0.1 * i + j))
        drops[key] = d
    uri = str(tmp_path / "t.lance")
    build_table(uri, drops, fragment_rows=2)
    for k, v in {"MMFS_FILL_ENGINE": "ray", "MMFS_TABLE_URI": uri, "MMFS_DROP_DIR": str(tmp_path / "drops"),
                 "MMFS_MODEL_PROFILE": "tiny", "MMFS_MODEL_DIR": str(model_dir)}.items():
        monkeypatch.setenv(k, v)
    asset = feature_asset(FEATURES["quality"])
    assert asset.backfill_policy == dg.BackfillPolicy.single_run()  # ray: a backfill is one run
    assert asset.op.pool is None  # and Ray, not the gpu pool, places the work
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("drops", keys)
        r = dg.materialize([asset], instance=instance, resources=build_resources(),
                           tags={"dagster/asset_partition_range_start": "d1", "dagster/asset_partition_range_end": "d4"})
        assert r.success
        mats = r.asset_materializations_for_node("quality")
        assert sorted(m.partition for m in mats) == keys  # one materialization per partition, from one run
        md = mats[0].metadata
        assert md["partitions_in_run"].value == 4 and md["engine"].value == "ray" and md["rows"].value == 10
        per = md["partition_reports"].value
        assert {k: per[k]["rows_computed"] for k in keys} == {"d1": 2, "d2": 3, "d3": 2, "d4": 3}
        obs = [e.event_specific_data.asset_observation for e in r.all_events if e.event_type_value == "ASSET_OBSERVATION"]
        assert sorted((o.partition, o.metadata["rows"].value) for o in obs) == [("d1", 2), ("d2", 3), ("d3", 2), ("d4", 3)]
        assert all(c.passed for c in r.get_asset_check_evaluations())
        assert sorted(instance.get_materialized_partitions(dg.AssetKey("quality"))) == keys
    t = lance.dataset(uri).to_table(columns=["quality_producer"])
    assert t["quality_producer"].null_count == 0 and len(t) == 10


SECRET_CHILD = """
import sys
from mmfs_assets.engine.engines import fill_partitions
from mmfs_assets.engine.fill_options import FillOptions, ModelSettings
from mmfs_assets.features import discover
from mmfs_assets.settings import Settings

s = Settings.from_env()
feature = {f.name: f for f in discover()}["quality"]
out = fill_partitions(s.table_ref, feature, ["A"], engine="ray", settings=s,
                      models=ModelSettings("tiny", sys.argv[1], "cpu", {}), options=FillOptions({"mmfs.asset": "quality"}))
assert out.problems == {} and out.reports["A"].rows_written == 6, out
"""


def test_storage_secrets_never_reach_rays_session_folder_or_logs(tmp_path, drops, model_dir):
    """The step's secret storage options reach the replicas through their own environment only: after a fill
    on a local Ray started by the engine, no file Ray wrote (logs, session, job config) holds the secret."""
    import json
    import subprocess
    import sys
    import tempfile

    uri = _table(tmp_path, {"A": drops["A"]})
    secret = "mmfs-test-secret-" + "7" * 24
    ray_tmp = tempfile.mkdtemp(prefix="mmfsray", dir="/tmp")  # short: Ray's unix sockets live under it
    try:
        env = {**__import__("os").environ, "RAY_TMPDIR": ray_tmp, "MMFS_TABLE_URI": uri,
               "MMFS_STORAGE_OPTIONS": json.dumps({"aws_secret_access_key": secret, "aws_region": "eu-north-1"})}
        p = subprocess.run([sys.executable, "-c", SECRET_CHILD, str(model_dir)], env=env, capture_output=True,
                           text=True, timeout=300)
        assert p.returncode == 0, p.stderr[-3000:]
        assert secret not in p.stdout + p.stderr
        files = [f for f in __import__("pathlib").Path(ray_tmp).rglob("*") if f.is_file() and not f.is_symlink()]
        assert any("session_" in str(f) and f.suffix in (".out", ".err", ".log") for f in files)  # Ray did write logs
        leaked = [str(f) for f in files if secret.encode() in f.read_bytes()]
        assert leaked == []
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_a_replica_with_other_secrets_says_so(monkeypatch):
    """A worker pod given other credentials than the step fails with what to fix, naming no secret value."""
    from mmfs_assets.engine.ray_replica import secret_digest, table_from_env

    monkeypatch.setenv("MMFS_STORAGE_OPTIONS", '{"aws_secret_access_key": "old-one", "aws_region": "x"}')
    digest = secret_digest({"aws_secret_access_key": "new-one"})
    with pytest.raises(PermissionError, match="aws_secret_access_key, from MMFS_STORAGE_OPTIONS") as e:
        table_from_env("s3://b/t.lance", {"aws_region": "x"}, digest)
    assert "old-one" not in str(e.value) and "new-one" not in str(e.value)
    ref = table_from_env("s3://b/t.lance", {"aws_region": "x"}, secret_digest({"aws_secret_access_key": "old-one"}))
    assert ref.options == {"aws_region": "x", "aws_secret_access_key": "old-one"}


NO_RAY_CHILD = """
import importlib.abc, sys

class NoRay(importlib.abc.MetaPathFinder):
    tried = []
    def find_spec(self, name, path=None, target=None):
        if name == "ray" or name.startswith("ray."):
            NoRay.tried.append(name)
            raise ImportError("ray is not installed (blocked by the test)")
        return None

sys.meta_path.insert(0, NoRay())
import mmfs_assets.definitions  # the code location loads without Ray
from mmfs_assets.engine.engines import choose_engine, fill_partitions
from mmfs_assets.engine.ray_cluster import RayUnavailableError
from mmfs_assets.engine.fill_options import FillOptions, ModelSettings
from mmfs_assets.features import discover
from mmfs_assets.settings import Settings

s = Settings.from_env()
assert s.fill_engine == "local" and choose_engine(s) == "local"
assert choose_engine(Settings.from_env({"MMFS_FILL_ENGINE": "auto"})) == "local"  # auto looks for Ray: none
NoRay.tried.clear()
feature = {f.name: f for f in discover()}["quality"]
models = ModelSettings("tiny", sys.argv[1], "cpu", {})
out = fill_partitions(s.table_ref, feature, ["A"], engine=choose_engine(s), settings=s, models=models,
                      options=FillOptions({"mmfs.asset": "quality"}))
assert out.reports["A"].rows_written == 6 and out.reports["A"].engine == "local"
assert NoRay.tried == [], NoRay.tried  # the local engine never even tried to import Ray
try:
    fill_partitions(s.table_ref, feature, ["A"], engine="ray", settings=s, models=models,
                    options=FillOptions({"mmfs.asset": "quality"}))
except RayUnavailableError as e:
    assert "pip install -e '.[ray]'" in str(e), e
else:
    raise AssertionError("the ray engine ran without Ray")
print("ok")
"""


def test_local_is_the_default_and_needs_no_ray(tmp_path, drops, model_dir):
    import os
    import subprocess
    import sys

    uri = _table(tmp_path, {"A": drops["A"]})
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMFS_")}
    p = subprocess.run([sys.executable, "-c", NO_RAY_CHILD, str(model_dir)], env={**env, "MMFS_TABLE_URI": uri},
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and p.stdout.strip().endswith("ok"), p.stderr[-3000:]
