"""MMFS_EXECUTOR: the executor the code location runs steps with, and its checks."""

from __future__ import annotations

import os
import subprocess
import sys

import dagster as dg
import pytest

from mmfs_assets.executors import (
    FORKSERVER_PRELOAD,
    ExecutorConfigError,
    build_executor,
    gpu_step_config,
    k8s_config,
    multiprocess_config,
)
from mmfs_assets.settings import Settings
from tests.dagster_server import ROOT


def test_multiprocess_is_the_default_and_forks_steps_from_a_preloaded_server(monkeypatch):
    assert Settings.from_env({}).executor == "multiprocess"
    monkeypatch.delenv("MMFS_STEP_START", raising=False)
    ex = build_executor("multiprocess")
    assert ex.name == "multiprocess" and ex is not dg.multiprocess_executor  # configured
    assert multiprocess_config("forkserver") == {"start_method": {"forkserver": {"preload_modules": list(FORKSERVER_PRELOAD)}}}
    assert "mmfs_assets.definitions" in FORKSERVER_PRELOAD and "torch" in FORKSERVER_PRELOAD
    monkeypatch.setenv("MMFS_STEP_START", "spawn")
    assert build_executor("multiprocess") is dg.multiprocess_executor
    monkeypatch.setenv("MMFS_STEP_START", "fork")
    with pytest.raises(ExecutorConfigError, match="MMFS_STEP_START='fork'"):
        build_executor("multiprocess")
    with pytest.raises(ValueError, match="MMFS_EXECUTOR='ray'"):
        Settings.from_env({"MMFS_EXECUTOR": "ray"})


def test_celery_and_k8s_name_the_missing_setting(monkeypatch):
    monkeypatch.delenv("MMFS_CELERY_BROKER", raising=False)
    monkeypatch.delenv("MMFS_K8S_IMAGE", raising=False)
    with pytest.raises(ExecutorConfigError, match="MMFS_CELERY_BROKER"):
        build_executor("celery")
    with pytest.raises(ExecutorConfigError, match="MMFS_K8S_IMAGE"):
        build_executor("k8s")
    with pytest.raises(ExecutorConfigError, match="key=value"):
        gpu_step_config("no-equals-sign")


def _validate(extra: dict) -> subprocess.CompletedProcess:
    env = {**os.environ, **extra}
    env.pop("DAGSTER_HOME", None)
    return subprocess.run([sys.executable, "-m", "dagster", "definitions", "validate", "-m", "mmfs_assets.definitions"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("extra", [
    {"MMFS_EXECUTOR": "k8s", "MMFS_K8S_IMAGE": "registry.example/mmfs:1"},
    {"MMFS_EXECUTOR": "celery", "MMFS_CELERY_BROKER": "redis://:pw@127.0.0.1:6379/0"},
])
def test_the_code_location_validates_with_each_executor(extra):
    r = _validate(extra)
    assert r.returncode == 0 and "Validation successful" in r.stderr + r.stdout, r.stderr[-3000:]


def test_k8s_gpu_steps_request_a_gpu_on_gpu_nodes(monkeypatch):
    monkeypatch.setenv("MMFS_K8S_IMAGE", "registry.example/mmfs:1")
    monkeypatch.setenv("MMFS_K8S_GPU_NODE_SELECTOR", "pool=a100")
    assert build_executor("k8s", ["clip_embedding"]).name == "k8s"
    cfg = k8s_config(["clip_embedding", "depth"])
    steps = cfg["per_step_k8s_config"]
    assert set(steps) == {"clip_embedding", "depth"}
    assert steps["depth"]["container_config"]["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    assert steps["depth"]["pod_spec_config"]["node_selector"] == {"pool": "a100"}
    assert cfg["job_image"] == {"env": "MMFS_K8S_IMAGE"}  # by name: the image (and secrets) come from the environment
    assert "MMFS_TABLE_URI" in cfg["env_vars"]
