"""Helpers for feature tests: a table with two described drops, tiny models, file snapshots."""

from __future__ import annotations

import shutil
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa

from mmfs_assets import samples
from mmfs_assets.engine.fill import fill_feature
from mmfs_assets.engine.report import FillReport
from mmfs_assets.features.models import load_model, model_context
from mmfs_assets.features.spec import Feature, LoadedModel, Model
from mmfs_assets.ingest.describe import describe_partition
from mmfs_assets.ingest.ingest_drop import ingest_drop
from mmfs_loader.contract.schema import ColumnGroup


def build_table(uri: str, drops: dict[str, Path], fragment_rows: int = 4) -> None:
    """Ingest and describe the drops; small fragments so fills commit several whole-fragment chunks."""
    for key, path in drops.items():
        ingest_drop(path, key, uri, properties={"mmfs.asset": "videos"}, fragment_rows=fragment_rows)
        describe_partition(uri, key, properties={"mmfs.asset": "video_metadata"})


def two_drop_table(root: Path, a_files: list[Path], b_videos: list, b_files: list[Path] = ()) -> Path:
    """``root/base.lance`` with drop A (copies of ``a_files``) and drop B (``b_files`` plus videos written
    from the ``samples.Spec`` list ``b_videos``), ingested and described."""
    drops = {"A": root / "drops" / "A", "B": root / "drops" / "B"}
    for d in drops.values():
        d.mkdir(parents=True)
    for f in a_files:
        shutil.copy(f, drops["A"] / f.name)
    for f in b_files:
        shutil.copy(f, drops["B"] / f.name)
    for spec in b_videos:
        samples.write_video(drops["B"] / spec.name, spec)
    uri = root / "base.lance"
    build_table(str(uri), drops)
    return uri


# drop B of the feature and store tests: two small videos
B_VIDEOS = [samples.Spec("b1.mp4", 96, 64, 20, 1.0), samples.Spec("b2.mp4", 64, 96, 20, 1.5, gop=5)]


def tiny(feature: Feature, model_dir: Path, **env: str) -> LoadedModel:
    ctx = model_context(feature, profile="tiny", model_dir=str(model_dir), device="cpu", env=env)
    return load_model(feature, ctx)


def fill(uri: str, key: str, feature: Feature, model: LoadedModel, **kw) -> FillReport:
    return fill_feature(uri, key, feature, model, properties={"mmfs.asset": feature.name, "mmfs.test": "1"}, **kw)


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def fill_by_name(uri: str, key: str, name: str, model_dir: str, chunk_rows: int) -> int:
    """Fill feature ``name`` for drop ``key`` with its tiny model (a spawn-pool job); rows written."""
    from mmfs_assets.features import discover

    feature = {f.name: f for f in discover()}[name]
    return fill(uri, key, feature, tiny(feature, Path(model_dir)), chunk_rows=chunk_rows).rows_written


# A toy feature declared the way a catalog module declares one: its compute returns only its value (the mean
# time of the clip's frames); frame count, timestamps and provenance are the engine's. With ``post``, the value
# is made by a post-processing function in the engine's worker processes instead.
TOY_GROUP = ColumnGroup("toy", (pa.field("toy", pa.float64()), pa.field("toy_timestamps", pa.list_(pa.float64()))))


def _toy_compute(net, clips) -> dict:
    return {"toy": [float(np.mean(c.timestamps)) for c in clips]}


def _toy_raw(net, clips) -> dict:
    return {"raw": [np.asarray(c.timestamps) for c in clips]}


def _toy_post(values: dict) -> dict:
    return {"toy": float(np.mean(values["raw"]))}


def _toy_load(post: bool, ctx) -> Model:
    if post:
        return Model("toy-mean", "none", _toy_raw, short_side=32, postprocess=_toy_post)
    return Model("toy-mean", "none", _toy_compute, short_side=32)


def toy_feature(post: bool = False) -> Feature:
    return Feature("toy", TOY_GROUP, "toy-v1", "MMFS_TOY", "toy", partial(_toy_load, post), "mean frame time (a test feature)",
                   frames=3, batch_size=2, uses_gpu=False)
