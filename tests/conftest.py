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
