"""End to end on an S3 server: drops uploaded to a bucket -> the daemon's drop sensor -> ingest (pointer
rows to the objects) -> metadata -> features (automation) -> `mmfs snapshot create` -> the loader reading
the snapshot and decoding clips from the bucket; the credentials are nowhere under $DAGSTER_HOME nor in
what the UI is served."""

from __future__ import annotations

import os
import subprocess
import sys

import lance
import pytest

from mmfs_loader import FeatureDataset
from mmfs_loader.contract import schema as S
from tests.dagster_server import ROOT
from tests.s3_pipeline import FEATURES, KEY_ID, SECRET, TABLE_URI, files_holding, s3_pipeline

pytestmark = pytest.mark.slow
DROPS = ["2026-12-01-a", "2026-12-01-b", "2026-12-02-a"]


def test_bucket_drops_to_loader_through_dagster_dev(tmp_path, fixture_dir, model_dir):
    good = sorted((fixture_dir / "good").iterdir())
    log = tmp_path / "dagster_dev.log"
    with s3_pipeline(tmp_path, model_dir, {"MMFS_VIDEO_STORAGE": "pointer"}) as p:
        for i, name in enumerate(DROPS):
            p.upload_drop(name, good[2 * i:2 * i + 2] + ([fixture_dir / "bad" / "garbage.mp4"] if i == 0 else []))
        p.upload_drop("2026-12-03-busy", good[:1], ready=False)  # no _READY: must not be ingested
        p.upload_drop("bad name", good[:1])  # refused
        filled = p.wait_filled(len(DROPS), timeout=600, log=log)
        runs = p.wait_runs_finished(120)
        assert all(r["status"] == "SUCCESS" for r in runs), [(r["status"], r["tags"]) for r in runs]
        sources = {t["value"] for r in runs for t in r["tags"] if t["key"] == "dagster/sensor_name"}
        assert sources == {"drop_sensor", "features_automation"}
        assert p.stats("videos")["numPartitions"] == len(DROPS)  # neither the busy drop nor the refused one

        ds = lance.dataset(TABLE_URI, storage_options=p.options)
        t = ds.to_table(columns=[S.DROP_ID, S.SOURCE_URI, S.VIDEO_STORAGE, "metadata_error",
                                 *(f"{f}_producer" for f in FEATURES), *(f"{f}_error" for f in FEATURES)]).to_pylist()
        assert sorted({r[S.DROP_ID] for r in t}) == DROPS
        assert all(r[S.VIDEO_STORAGE] == "pointer" and r[S.SOURCE_URI].startswith(f"s3://mmfs/incoming/{r[S.DROP_ID]}/")
                   for r in t)
        ok = [r for r in t if r["metadata_error"] is None]
        assert len(ok) == 6 and len(t) == 7
        for f in FEATURES:  # every value present, one producer per group
            assert all(r[f"{f}_producer"] and r[f"{f}_error"] is None for r in ok), f
            assert len({S.producer_model(r[f"{f}_producer"]) for r in ok}) == 1, f  # one model (sampling=auto per row)

        env = {**os.environ, **p.env}
        cli = subprocess.run([sys.executable, "-m", "mmfs_assets.cli.app", "snapshot", "create", "s3-snap",
                              "--require", "clip_embedding", "--require", "caption"],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert cli.returncode == 0, cli.stdout + cli.stderr
        assert SECRET not in cli.stdout + cli.stderr
        snap = FeatureDataset(TABLE_URI, tag="s3-snap", columns=[S.DROP_ID, "clip_embedding"],
                              clip={"frames": 2, "size": 32}, storage_options=p.options)
        samples = list(snap)
        assert len(samples) == 6 and all(bool(s["clip_ok"]) for s in samples)
        assert sorted({s[S.DROP_ID] for s in samples}) == DROPS

        ui = p.ui_text()
        assert p.options["aws_endpoint"] in ui  # the public options are shown: we looked in the right place
        assert SECRET not in ui and KEY_ID not in ui
        assert files_holding(p.home, [SECRET, KEY_ID]) == []
    print("seconds until every drop was filled, per asset:", {a: round(s) for a, s in filled.items()})
