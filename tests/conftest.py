"""Shared fixtures: generated videos (PyAV, no network), isolated table/drop/Dagster locations."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before anything imports huggingface_hub
os.environ.setdefault("LANCE_LOG", "error")
# The loader's node directory (selections, orders, caches): under this session's temp, not /dev/shm.
os.environ.setdefault("MMFS_LOADER_CACHE_DIR", __import__("tempfile").mkdtemp(prefix="mmfs-test-node-"))

import shutil
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest

from mmfs_assets import samples
from mmfs_assets.settings import Settings


@pytest.fixture(scope="session")
def fixture_dir(tmp_path_factory) -> Path:
    """Good and broken sample videos, generated once per test session."""
    d = tmp_path_factory.mktemp("fixtures")
    samples.make_good(d / "good")
    samples.make_bad(d / "bad", scratch=d)
    return d


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """Where the tiny random-init models are written, once per test session."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture
def env(tmp_path, monkeypatch, model_dir) -> Settings:
    """MMFS_* settings pointing at a fresh table and drop folder under tmp_path, tiny models."""
    monkeypatch.setenv("MMFS_MODEL_PROFILE", "tiny")
    monkeypatch.setenv("MMFS_MODEL_DIR", str(model_dir))
    monkeypatch.setenv("MMFS_TABLE_URI", str(tmp_path / "videos.lance"))
    monkeypatch.setenv("MMFS_DROP_DIR", str(tmp_path / "drops"))
    monkeypatch.setenv("MMFS_VIDEO_STORAGE", "inline")
    (tmp_path / "drops").mkdir()
    return Settings.from_env()


def make_drop(settings: Settings, name: str, files: list[Path], ready: bool = True, rename: dict | None = None) -> Path:
    drop = Path(settings.drop_dir) / name
    drop.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copy(f, drop / (rename or {}).get(f.name, f.name))
    if ready:
        (drop / "_READY").touch()
    return drop


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def demo_like_table(n: int = 2) -> pa.Table:
    """``n`` rows shaped like the demo's (every column group of the table, no video column: SQL leaves it
    out): a 512-float vector, 37 keyframe times, four 518x924 depth PNGs, producer strings of ~150 characters
    and a 300-character caption. Written with ``lance.write_dataset`` it is a table ``mmfs sql`` reads."""
    import io
    from datetime import UTC, datetime

    from PIL import Image

    from mmfs_loader.contract import schema as S

    png = io.BytesIO()
    Image.new("I;16", (518, 924)).save(png, format="PNG")
    groups = [
        S.METADATA,
        S.ColumnGroup("caption", (pa.field("caption", pa.string()), pa.field("caption_timestamps", pa.list_(pa.float64())))),
        S.ColumnGroup("clip_embedding", (pa.field("clip_embedding", pa.list_(pa.float32(), 512)),
                                         pa.field("clip_embedding_timestamps", pa.list_(pa.float64())))),
        S.ColumnGroup("depth", (pa.field("depth_png", pa.list_(pa.binary())), pa.field("depth_min", pa.list_(pa.float32())),
                                pa.field("depth_max", pa.list_(pa.float32())), pa.field("depth_timestamps", pa.list_(pa.float64())))),
        S.ColumnGroup("quality", (pa.field("sharpness", pa.float32()), pa.field("motion", pa.float32()))),
    ]
    fields = [f for f in S.INGEST_SCHEMA if f.name != S.VIDEO] + [f for g in groups for f in g.fields]

    def value(f: pa.Field, i: int):
        t = f.type
        if f.name == "caption":
            return ("a person walks a dog along a beach at sunset " * 8)[:300]
        if f.name == "keyframe_times":
            return [k * 2.0 for k in range(37)]
        if f.name.endswith("_producer"):
            return f"{f.name[:-9]}:v1|model=local:x/{'m' * 40}|weights=sha256:{'e975696c49f3' * 4}|frames=8x64|profile=tiny"
        if f.name.endswith("_error"):
            return None
        if pa.types.is_fixed_size_list(t):
            return [(i + k) / 1000 for k in range(t.list_size)]
        if pa.types.is_list(t):
            return [png.getvalue()] * 4 if pa.types.is_binary(t.value_type) else [k / 3 for k in range(4)]
        if pa.types.is_timestamp(t):
            return datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
        if pa.types.is_boolean(t):
            return False
        if pa.types.is_integer(t):
            return 924 if f.name == "height" else 518 if f.name == "width" else i
        if pa.types.is_floating(t):
            return 1.5
        return "demo-001" if f.name == S.DROP_ID else f"{f.name}-{i:03d}"

    schema = pa.schema(fields)
    return pa.Table.from_pylist([{f.name: value(f, i) for f in schema} for i in range(n)], schema=schema)
