"""The whole pipeline on an S3 server: drops uploaded to a bucket, found by the real daemon's drop sensor,
ingested and filled by the automation into a table in the same bucket.

Used by ``tests/test_e2e_s3.py`` (a few drops, in CI) and ``bench/soak.py`` (fifty). Credentials are
distinctive values passed only through ``MMFS_STORAGE_OPTIONS`` in the processes' environment, so a test
can look for them where they must never be: under ``$DAGSTER_HOME`` and in what the UI is served.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.dagster_server import ROOT, DagsterDev
from tests.moto_server import moto_s3

KEY_ID = "AKIAMMFSE2E7KEYID0042"
SECRET = "mmfs-e2e/Sekret+9f3c1d7a20b64e"
BUCKET = "mmfs"
DROP_PREFIX = "incoming/"
TABLE_URI = f"s3://{BUCKET}/tables/videos.lance"
DROP_DIR = f"s3://{BUCKET}/{DROP_PREFIX}"
FEATURES = ("clip_embedding", "depth", "caption", "quality")
ASSETS = ("videos", "video_metadata", *FEATURES, "dup_group", "drop_stats")

STATS = """query($key: [String!]!) { assetNodeOrError(assetKey: {path: $key}) { ... on AssetNode {
  partitionStats { numMaterialized numFailed numPartitions numMaterializing } } } }"""
RUNS = "{ runsOrError { ... on Runs { results { runId status runConfigYaml tags { key value } } } } }"
RESOURCES = """{ repositoryOrError(repositorySelector: {repositoryName: "__repository__", repositoryLocationName: "mmfs"}) {
  ... on Repository { allTopLevelResourceDetails { name configuredValues { key value type } } } } }"""
TICKS = """{ sensorsOrError(repositorySelector: {repositoryName: "__repository__", repositoryLocationName: "mmfs"}) {
  ... on Sensors { results { name sensorState { ticks(limit: 50) { status cursor skipReason runKeys
    error { message } } } } } } }"""


@dataclass
class S3Pipeline:
    server: DagsterDev
    options: dict[str, str]
    env: dict[str, str]
    home: Path
    client: object

    def upload_drop(self, name: str, files: list[Path], ready: bool = True) -> None:
        """The drop's objects, then ``_READY`` last (a drop is complete when its marker appears)."""
        for f in files:
            self.client.put_object(Bucket=BUCKET, Key=f"{DROP_PREFIX}{name}/{f.name}", Body=f.read_bytes())  # type: ignore[attr-defined]
        if ready:
            self.client.put_object(Bucket=BUCKET, Key=f"{DROP_PREFIX}{name}/_READY", Body=b"")  # type: ignore[attr-defined]

    def stats(self, asset: str) -> dict:
        return self.server.gql(STATS, {"key": [asset]})["assetNodeOrError"]["partitionStats"]

    def wait_filled(self, n_drops: int, timeout: float, assets=ASSETS, log: Path | None = None,
                    progress=None) -> dict[str, float]:
        """Seconds until each asset had all ``n_drops`` partitions materialized; fails on a failed partition.
        ``progress(seconds, {asset: partitions materialized})`` hears the counts about once a minute."""
        t0 = time.time()
        done: dict[str, float] = {}
        said = t0
        while time.time() - t0 < timeout:
            counts = {}
            for a in assets:
                if a in done:
                    counts[a] = n_drops
                    continue
                st = self.stats(a)
                if st["numFailed"]:
                    raise AssertionError(f"{a}: {st['numFailed']} failed partitions; {tail(log)}")
                counts[a] = st["numMaterialized"]
                if st["numMaterialized"] >= n_drops:
                    done[a] = time.time() - t0
            if progress and time.time() - said >= 60:
                said = time.time()
                progress(said - t0, counts)
            if len(done) == len(assets):
                return done
            time.sleep(3)
        raise TimeoutError(f"not filled after {timeout:.0f}s: {done} of {assets}; {tail(log)}")

    def wait_runs_finished(self, timeout: float) -> list[dict]:
        deadline = time.time() + timeout
        while True:
            runs = self.server.gql(RUNS)["runsOrError"]["results"]
            if not any(r["status"] in ("QUEUED", "NOT_STARTED", "STARTING", "STARTED") for r in runs) or time.time() > deadline:
                return runs
            time.sleep(1)

    def ui_text(self) -> str:
        """What the UI is served about resources, runs (config, tags) and sensor ticks (cursors, skips)."""
        return json.dumps([self.server.gql(RESOURCES), self.server.gql(RUNS), self.server.gql(TICKS)])


def tail(log: Path | None, n: int = 4000) -> str:
    return log.read_text(errors="replace")[-n:] if log and log.exists() else ""


def files_holding(root: Path, needles: list[str]) -> list:
    """Files under ``root`` holding any of ``needles``, SQLite cells decompressed (``tests/test_secrets.py``)."""
    from tests.test_secrets import _hits

    return _hits(root, needles)


@contextmanager
def s3_pipeline(tmp_path: Path, model_dir: Path, extra_env: dict[str, str] | None = None) -> Iterator[S3Pipeline]:
    """moto on 127.0.0.1 and `dagster dev` (webserver + daemon) with the table and the drops in its bucket."""
    from mmfs_assets.ingest.s3_client import s3_client

    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    with moto_s3(BUCKET, key_id=KEY_ID, secret=SECRET) as options:
        env = {
            "DAGSTER_HOME": str(home),
            "MMFS_TABLE_URI": TABLE_URI,
            "MMFS_DROP_DIR": DROP_DIR,
            "MMFS_STORAGE_OPTIONS": json.dumps(options),
            "MMFS_DROP_QUIET_SECONDS": "3600",  # readiness by _READY only
            "MMFS_MODEL_PROFILE": "tiny",
            "MMFS_MODEL_DIR": str(model_dir),
            **(extra_env or {}),
        }
        with DagsterDev(env, tmp_path / "dagster_dev.log") as server:
            yield S3Pipeline(server, options, env, home, s3_client(options))
